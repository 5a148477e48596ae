"""A TCP proxy in front of the real PostgreSQL server that a test can cut, as a failover, a
network partition or a stopped server would: while it is down, open connections are closed and
new ones are accepted and closed at once, so the client sees the server vanish mid-transaction."""

from __future__ import annotations

import socket
import threading
from contextlib import contextmanager, suppress

from psycopg2.extensions import make_dsn


class FaultProxy:
    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._up = threading.Event()
        self._up.set()
        self._closed = False
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def dsn(self, dsn: str) -> str:
        """`dsn` pointing at the proxy instead of the server."""
        return make_dsn(dsn, host="127.0.0.1", port=self.port)

    def cut(self) -> None:
        self._up.clear()
        with self._lock:
            for connection in list(self._connections):
                _close(connection)
            self._connections.clear()

    def restore(self) -> None:
        self._up.set()

    @contextmanager
    def outage(self):
        self.cut()
        try:
            yield
        finally:
            self.restore()

    def close(self) -> None:
        self._closed = True
        self.cut()
        _close(self._listener)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._up.is_set():
                _close(client)
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._connections.update((client, server))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for connection in (source, sink):
                _close(connection)
                with self._lock:
                    self._connections.discard(connection)


def _close(connection: socket.socket) -> None:
    with suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
    connection.close()

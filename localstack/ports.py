"""Host and port helpers: which servers are on this machine, and whether a port is free to listen
on."""

from __future__ import annotations

import socket

from common.errors import CommandError

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def split_host_port(address: str, default_port: int) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`, or a bare host) as a (host, port) pair."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or "]" in port:
        host, port = address.strip(), str(default_port)
    host = host.strip("[]")
    try:
        return host, int(port)
    except ValueError:
        raise CommandError(
            f"`{address}` is not a host:port address; write it as e.g. localhost:{default_port}"
        ) from None


def is_local_host(host: str) -> bool:
    return host.lower() in LOCAL_HOSTS


def bind_address(host: str) -> str:
    """The address a server asked to listen on `host` will bind, for the free-port check."""
    return "::1" if host == "::1" else "127.0.0.1" if host.lower() == "localhost" else host


def port_is_free(host: str, port: int) -> bool:
    """True if a server could listen on host:port now.

    Binding (rather than connecting) also catches a port held by a socket that is bound but not
    yet listening; SO_REUSEADDR matches what Kafka and PostgreSQL set, so connections of a server
    we just stopped, left in TIME_WAIT, do not count as taken.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((bind_address(host), port))
        except OSError:
            return False
    return True


def require_free_port(host: str, port: int, purpose: str, how_to_change: str) -> None:
    if not port_is_free(host, port):
        raise CommandError(
            f"port {port} on {host} ({purpose}) is already in use by another program;"
            f" stop that program, or {how_to_change}"
        )

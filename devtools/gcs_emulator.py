"""A Cloud Storage emulator for the gs:// tests and benchmark: fake-gcs-server (built by `make
go-tools`), started on a free port with its objects in memory, and the few JSON API calls made of
it to see what the jobs wrote. The jobs themselves reach it through the Cloud Storage connector
(STORAGE_EMULATOR_HOST, spark_jobs/session.py), as they reach Cloud Storage on Dataproc."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from common.settings import REPO_ROOT

FAKE_GCS_SERVER_VERSION = "v1.56.1"
BINARY = (
    REPO_ROOT / ".state" / "tools" / "go" / "bin" / f"fake-gcs-server-{FAKE_GCS_SERVER_VERSION}"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class GcsEmulator:
    url: str
    process: subprocess.Popen

    @classmethod
    def start(cls, log_path: Path, log_requests: bool = False) -> GcsEmulator:
        """Started and answering; with `log_requests`, one log line per request (as `info` does)."""
        if not BINARY.exists():
            raise RuntimeError(f"{BINARY} is missing: run `make go-tools` (make test does)")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process = subprocess.Popen(
            [str(BINARY), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
             "-backend", "memory", "-public-host", f"127.0.0.1:{port}", "-external-url", url,
             "-log-level", "info" if log_requests else "warn"],
            stdout=log_path.open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        emulator = cls(url, process)
        emulator._wait_until_ready()
        return emulator

    def _wait_until_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"fake-gcs-server exited with {self.process.returncode}")
            try:
                self._request("GET", "/storage/v1/b")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        raise RuntimeError(f"fake-gcs-server did not answer on {self.url} within {timeout} s")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> bytes:
        request = urllib.request.Request(
            self.url + path, data=body, method=method, headers={"Content-Type": content_type}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read()

    def create_bucket(self, name: str) -> None:
        self._request("POST", "/storage/v1/b?project=emulated", json.dumps({"name": name}).encode())

    def object_names(self, bucket: str, prefix: str) -> list[str]:
        """Every object name under `prefix`, all pages."""
        names, token = [], None
        while True:
            query = {"prefix": prefix, **({"pageToken": token} if token else {})}
            page = json.loads(
                self._request("GET", f"/storage/v1/b/{bucket}/o?{urllib.parse.urlencode(query)}")
            )
            names += [item["name"] for item in page.get("items", [])]
            token = page.get("nextPageToken")
            if not token:
                return sorted(names)

    def read(self, bucket: str, name: str) -> bytes:
        return self._request(
            "GET", f"/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}?alt=media"
        )

    def write(self, bucket: str, name: str, data: bytes) -> None:
        query = urllib.parse.urlencode({"uploadType": "media", "name": name})
        self._request(
            "POST", f"/upload/storage/v1/b/{bucket}/o?{query}", data, "application/octet-stream"
        )

"""Real tracking servers for tests: ``mlflow server`` on 127.0.0.1, and servers that misbehave.

``MlflowServer`` runs ``python -m mlflow server`` with a sqlite backend and a local artifact
folder in a temp directory, on a free port, in its own process group (mlflow starts uvicorn
as a child, so stopping means stopping the group). ``start()`` returns at once and
``wait_ready()`` polls ``/health``, so a second server can boot while tests use the first.

``SilentServer`` accepts connections and never answers; ``FaultyServer`` answers 503 with a
``Retry-After`` the client must not honour, optionally forwarding everything else to a real
server so a run can fail midway.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MlflowServer:
    """One ``mlflow server`` process group with its own sqlite store and artifact folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "server.log"

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job workers: faster start
        cmd = [sys.executable, "-m", "mlflow", "server",
               "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
               "--artifacts-destination", str(self.root / "artifacts"),
               "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 120.0) -> MlflowServer:
        assert self.proc is not None, "start() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}:\n"
                                   + self.log.read_text(errors="replace")[-3000:])
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"mlflow server not ready after {timeout:g} s:\n"
                           + self.log.read_text(errors="replace")[-3000:])

    def _signal_group(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """Die at once, as a crashed or unplugged server does."""
        self._signal_group(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            self.proc.wait(3)  # a throwaway store: no need to wait long for a clean exit
        except subprocess.TimeoutExpired:
            self.kill()
        # uvicorn's worker may outlive its parent for a moment: make sure the group is gone
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def mlflow_server(root: Path) -> Iterator[MlflowServer]:
    """A ready server for the duration of the block; stopped (process group) at the end."""
    server = MlflowServer(root).start()
    try:
        yield server.wait_ready()
    finally:
        server.stop()


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for c in self.accepted:
            c.close()
        self._thread.join(5)


class FaultyServer:
    """Answers 503 (with ``Retry-After: 60``) to requests whose ``METHOD path`` matches ``fail``, waits
    ``delay`` seconds before those matching ``slow``, and forwards the rest to ``upstream``
    (with no upstream, every request fails). ``fail_after``: once a request matches it, every
    later request fails too, as if the server had gone away."""

    def __init__(self, upstream: str | None = None, fail: str = ".*", slow: str = "$^",
                 delay: float = 0.0, fail_after: str = "$^") -> None:
        self.upstream, self.fail, self.slow = upstream, re.compile(fail), re.compile(slow)
        self.fail_after = re.compile(fail_after)
        self.gone = False
        self.delay = delay
        self.failed: list[str] = []
        self.seen: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = f"{self.command} {self.path}"
                outer.seen.append(request)
                if outer.slow.search(self.path):
                    time.sleep(outer.delay)
                outer.gone = outer.gone or bool(outer.fail_after.search(self.path))
                if outer.upstream is None or outer.fail.search(request) or outer.gone:
                    outer.failed.append(f"{self.command} {self.path}")
                    payload = b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "down"}'
                    self.send_response(503)
                    self.send_header("Retry-After", "60")
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length", "connection")}
                req = urllib.request.Request(outer.upstream + self.path, data=body or None,
                                             headers=headers, method=self.command)
                try:
                    with urllib.request.urlopen(req, timeout=30) as r:
                        status, data, rh = r.status, r.read(), r.headers
                except urllib.error.HTTPError as e:
                    status, data, rh = e.code, e.read(), e.headers
                except OSError:  # upstream gone (e.g. stopped at the end of the module)
                    with contextlib.suppress(OSError):  # and the client may be gone too
                        self.send_error(502)
                    return
                self.send_response(status)
                for k, v in rh.items():
                    if k.lower() not in ("content-length", "connection", "transfer-encoding",
                                         "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

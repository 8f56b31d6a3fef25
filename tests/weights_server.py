"""A loopback HTTP server that stands in for Paddle's weights host in the tests (127.0.0.1, a free port, a thread).

It serves files by name, honours ``Range`` + ``If-Range`` (206) like a real object store, counts the requests, and
misbehaves on demand: each request takes the next entry of ``behaviours`` (then ``"ok"``):

- ``ok``: the file (206 for a valid range request);
- ``no-range``: the whole file with 200, whatever the request asked;
- ``404``; ``html``: a 200 HTML page;
- ``truncate``: headers announce the whole file, the body stops at ``truncate_at`` bytes and the connection closes;
- ``gate``: the first half of the body, then a wait on ``gate`` (a threading.Event), then the rest.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LAST_MODIFIED = "Wed, 01 Jan 2020 00:00:00 GMT"


class WeightsServer:
    """Start with ``with WeightsServer({name: path}) as server``; ``server.url`` is the mirror base URL."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = dict(files)
        self.requests: list[dict] = []  # per request: path, range, status
        self.behaviours: list[str] = []
        self.truncate_at = 1000
        self.gate = threading.Event()
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def gets(self, name: str) -> list[dict]:
        """The requests made for ``name``."""
        return [r for r in self.requests if r["path"] == f"/{name}"]

    def __enter__(self) -> WeightsServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def _next_behaviour(self) -> str:
        with self.lock:
            return self.behaviours.pop(0) if self.behaviours else "ok"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep the test output clean
                pass

            def do_GET(self) -> None:
                record = {"path": self.path, "range": self.headers.get("Range"), "status": None}
                with server.lock:
                    server.requests.append(record)
                behaviour = server._next_behaviour()
                name = self.path.lstrip("/")
                if behaviour == "404" or name not in server.files:
                    record["status"] = 404
                    self.send_error(404, "Not Found")
                    return
                if behaviour == "html":
                    record["status"] = 200
                    self._send(200, b"<html><body>Please log in</body></html>", "text/html")
                    return
                data = server.files[name].read_bytes()
                start = self._range_start(len(data)) if behaviour != "no-range" else 0
                record["status"] = 206 if start else 200
                self._send(record["status"], data, "application/x-tar", start, behaviour)

            def _range_start(self, size: int) -> int:
                wanted = self.headers.get("Range", "")
                if not wanted.startswith("bytes=") or self.headers.get("If-Range") not in (None, LAST_MODIFIED):
                    return 0
                start = int(wanted.removeprefix("bytes=").split("-")[0])
                return start if 0 < start < size else 0

            def _send(self, status: int, data: bytes, kind: str, start: int = 0, behaviour: str = "ok") -> None:
                body = data[start:]
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Last-Modified", LAST_MODIFIED)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if behaviour == "truncate":
                    self.wfile.write(body[: server.truncate_at])
                    self.close_connection = True
                elif behaviour == "gate":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    server.gate.wait(timeout=120)
                    self.wfile.write(body[len(body) // 2 :])
                else:
                    self.wfile.write(body)

        return Handler

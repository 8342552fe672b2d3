"""A local HTTP test server on 127.0.0.1 that records what it is sent and answers like the model service.

Started in a thread of the test process and always stopped (use it as a context manager). It serves:
  POST any path     records (path, Content-Type, body) and answers a valid prediction, after `delay_s`
                     (with `serial`, one at a time: a server whose capacity is 1 / delay_s)
  GET /files/<name> the bytes given in `files` (a payload fetched by URL), counting the fetches
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREDICTION = json.dumps({"predictions": [{"label": "tabby", "score": 0.9}]}).encode()


@dataclass
class Seen:
    path: str
    content_type: str
    body: bytes
    at: float
    client: str = ""  # the peer's address (a worker in a network namespace sends from its own)


@dataclass
class SinkServer:
    delay_s: float = 0.0
    serial: bool = False
    status: int = 200
    answer: bytes = PREDICTION
    fail_first: int = 0  # the first this many POSTs (idle checks aside) answer 503
    files: dict[str, bytes] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    fetches: dict[str, int] = field(default_factory=dict)
    quiesce_checks: int = 0  # loadgrid's unloaded idle checks (header X-Loadgrid-Quiesce), kept out of `seen`
    bind: str = "127.0.0.1"  # 0.0.0.0: reachable from network namespaces too (tests/support/netns.py)

    def __post_init__(self):
        self._lock = threading.Lock()
        self._busy = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real server
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

            def log_message(self, *args):
                pass

            def _answer(self, status: int, body: bytes, content_type: str = "application/json"):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                name = self.path.removeprefix("/files/")
                if self.path.startswith("/files/") and name in sink.files:
                    with sink._lock:
                        sink.fetches[name] = sink.fetches.get(name, 0) + 1
                    self._answer(200, sink.files[name], "application/octet-stream")
                else:
                    self._answer(404, b"{}")

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with sink._lock:
                    if self.headers.get("X-Loadgrid-Quiesce"):
                        sink.quiesce_checks += 1
                        return self._answer(sink.status, sink.answer)
                    sink.seen.append(Seen(self.path, self.headers.get("Content-Type", ""), body, time.time(),
                                          self.client_address[0]))
                    failing = len(sink.seen) <= sink.fail_first
                if failing:
                    return self._answer(503, b'{"error": "warming up"}')
                if sink.delay_s:
                    with sink._busy if sink.serial else contextlib.nullcontext():
                        time.sleep(sink.delay_s)  # the server's own service time, not test synchronisation
                self._answer(sink.status, sink.answer)

        self._server = ThreadingHTTPServer((self.bind, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.seen)

    def __enter__(self) -> SinkServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

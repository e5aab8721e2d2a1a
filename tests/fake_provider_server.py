"""A real HTTP server on 127.0.0.1 that answers like the providers' APIs, with scripted faults."""
from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse


class Reply:
    def __init__(self, body=None, status: int = 200, delay: float = 0.0, raw: str | None = None,
                 headers: dict | None = None):
        self.body, self.status, self.delay, self.raw, self.headers = body, status, delay, raw, headers or {}


class FakeProviderServer:
    """``script(path, *replies)`` queues replies for a path; the last one repeats. Requests are recorded."""

    def __init__(self):
        self.replies: dict[str, deque] = defaultdict(deque)
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the stdlib's name
                parsed = urlparse(self.path)
                server.requests.append({"path": parsed.path, "query": parsed.query,
                                        "headers": dict(self.headers)})
                queue = server.replies.get(parsed.path)
                reply = ((queue.popleft() if len(queue) > 1 else queue[0]) if queue
                         else Reply({"error": "not found"}, 404))
                if reply.delay:
                    time.sleep(reply.delay)
                payload = reply.raw if reply.raw is not None else json.dumps(reply.body)
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(payload.encode())
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def script(self, path: str, *replies: Reply) -> None:
        self.replies[path] = deque(replies)

    def hits(self, path: str) -> list[dict]:
        return [r for r in self.requests if r["path"] == path]

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

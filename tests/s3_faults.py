"""A fault-injecting HTTP proxy in front of an S3-compatible server, on 127.0.0.1.

Every request is forwarded to the real server unless the proxy's seeded schedule makes it fail
first: `throttle` of requests get S3's `503 SlowDown` error, `drop` of them have their connection
closed without an answer; the next `lose_uploads` multipart uploads are answered as complete but never
completed (a store that acknowledges a write it then loses). The proxy records every request line, so
tests can see multipart uploads (`?uploads`, `?partNumber=`) and count injected faults.
"""

from __future__ import annotations

import http.client
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")


class FaultyS3Proxy:
    def __init__(self, upstream: str, throttle: float = 0.1, drop: float = 0.03, seed: int = 0):
        parsed = urlparse(upstream)
        self.upstream = (parsed.hostname, parsed.port)
        self.throttle, self.drop = throttle, drop
        self.enabled = True
        self.lose_uploads = 0
        self.log: list[tuple[str, str, str]] = []  # (method, path, outcome)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultyS3Proxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def count(self, outcome: str) -> int:
        return sum(1 for _, _, o in self.log if o == outcome)

    def _fate(self, command: str, path: str) -> str:
        with self._lock:
            if not self.enabled:
                return "forwarded"
            if command == "POST" and "uploadId=" in path and self.lose_uploads > 0:
                self.lose_uploads -= 1
                return "lost"
            u = self._rng.random()
        return "throttled" if u < self.throttle else "dropped" if u < self.throttle + self.drop else "forwarded"

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _body(self) -> bytes:
                """The request body, also when the client streams it with chunked transfer encoding
                (the AWS SDK in pyarrow does for uploads)."""
                if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
                    return self.rfile.read(int(self.headers.get("Content-Length") or 0))
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(chunks)

            def _proxy(self):
                body = self._body()
                fate = proxy._fate(self.command, self.path)
                with proxy._lock:
                    proxy.log.append((self.command, self.path, fate))
                if fate == "dropped":
                    self.close_connection = True
                    self.connection.close()
                    return
                if fate == "lost":
                    key = self.path.split("?")[0].split("/", 2)[-1]
                    self._answer(200, b'<?xml version="1.0" encoding="UTF-8"?><CompleteMultipartUploadResult>'
                                      b"<Key>" + key.encode() + b'</Key><ETag>"lost"</ETag>'
                                      b"</CompleteMultipartUploadResult>")
                    return
                if fate == "throttled":
                    self._answer(503, SLOW_DOWN)
                    return
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("connection", "transfer-encoding", "content-length")}
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                self.send_response(response.status)
                for k, v in response.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                # HEAD answers carry the object's size, not a body's
                length = response.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length or "0")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _proxy

        return Handler

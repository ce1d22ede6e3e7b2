"""A counting HTTP reverse proxy for the S3 bench: every request of every process (the extract
process and its decode workers) passes through it on its way to the loopback S3 server, so the
count is the one the object store would bill, whatever client library or process sent it.

Standard library only (``http.server`` in front, ``http.client`` behind). Bodies are read whole
and forwarded with a ``Content-Length``; the counted bytes are bodies, not headers.
"""

from __future__ import annotations

import html
import http.client
import re
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

# Hop-by-hop headers (RFC 9110 7.6.1) are the proxy's own business on each side.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
}


@dataclass(frozen=True)
class Request:
    """One request as the object store sees it: its S3 kind, key, and body bytes each way."""

    kind: str  # GET, PUT, HEAD, LIST, DELETE, POST
    key: str  # bucket/key, or bucket for a bucket-level call
    up: int
    down: int


def s3_kind(method: str, path: str) -> str:
    """The S3 operation family of a request: a GET of a bucket (ListObjects) is a LIST, a POST
    ``?delete`` (DeleteObjects) a DELETE."""
    parts = urlsplit(path)
    query = parse_qs(parts.query, keep_blank_values=True)
    bucket_only = "/" not in unquote(parts.path).strip("/")
    if method == "GET" and (bucket_only or "list-type" in query):
        return "LIST"
    if method == "POST" and "delete" in query:
        return "DELETE"
    return method


def s3_key(path: str, body: bytes) -> str:
    """``bucket/key`` a request is about: a listing's prefix, the first key a DeleteObjects
    names, else the path."""
    parts = urlsplit(path)
    key = unquote(parts.path).strip("/")
    query = parse_qs(parts.query, keep_blank_values=True)
    if "prefix" in query:
        return f"{key}/{query['prefix'][0]}".rstrip("/")
    if "delete" in query and (named := re.search(rb"<Key>(.*?)</Key>", body)):
        return f"{key}/{html.unescape(named.group(1).decode())}"
    return key


class CountingProxy:
    """``with CountingProxy(upstream) as proxy:`` listen on 127.0.0.1 and forward to
    ``upstream`` (``http://host:port``); ``proxy.url`` is the endpoint for clients and
    ``proxy.take()`` the requests forwarded since the last call."""

    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        self._upstream = (target.hostname, target.port)
        self._lock = threading.Lock()
        self._log: list[Request] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> CountingProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def take(self) -> list[Request]:
        with self._lock:
            log, self._log = self._log, []
        return log

    def _record(self, request: Request) -> None:
        with self._lock:
            self._log.append(request)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self
        local = threading.local()  # one upstream connection per proxy thread, kept alive

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients expect
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms

            def log_message(self, *args: object) -> None:  # quiet: the bench prints tables
                pass

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    parts = []
                    while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline().strip():  # trailers, then the blank line
                        pass
                    return b"".join(parts)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _forward(self) -> None:
                body = self._body()
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                response = self._send_upstream(body, headers)
                payload = b"" if self.command == "HEAD" else response.read()
                self.send_response_only(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                length = response.getheader("Content-Length")
                if self.command != "HEAD" or length is None:
                    length = str(len(payload))
                self.send_header("Content-Length", length)
                self.end_headers()
                if payload:
                    self.wfile.write(payload)
                kind = s3_kind(self.command, self.path)
                proxy._record(Request(kind, s3_key(self.path, body), len(body), len(payload)))

            def _send_upstream(self, body: bytes, headers: dict) -> http.client.HTTPResponse:
                for attempt in (0, 1):  # a kept-alive connection the server closed: reopen once
                    if getattr(local, "conn", None) is None:
                        local.conn = http.client.HTTPConnection(*proxy._upstream, timeout=60)
                    try:
                        local.conn.request(self.command, self.path, body=body, headers=headers)
                        return local.conn.getresponse()
                    except (ConnectionError, http.client.HTTPException):
                        local.conn.close()
                        local.conn = None
                        if attempt:
                            raise
                raise AssertionError("unreachable")

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _forward

        return Handler


def tally(requests: list[Request]) -> Counter:
    """Requests by kind."""
    return Counter(r.kind for r in requests)

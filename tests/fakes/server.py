"""A real HTTP/1.1 server on loopback for fake upstreams: scriptable per test, recording what it got.

Subclasses implement `handle(recorded, step, writer)`. Tests queue `steps` (what to do for the
next request); the default step applies when the queue is empty. Responses are written either
whole (`writer.json`) or as a chunked stream (`writer.start_stream` / `writer.chunk`), so
streaming goes over the wire exactly as a real provider sends it.
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    # The client's port: requests on one kept-alive connection share it.
    client_port: int = 0
    # Set when the client went away before the answer was fully written.
    client_disconnected: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class Writer:
    def __init__(self, handler: BaseHTTPRequestHandler, recorded: Recorded) -> None:
        self.handler = handler
        self.recorded = recorded

    def json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        h = self.handler
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(raw)))
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.end_headers()
        h.wfile.write(raw)
        h.wfile.flush()

    def start_stream(self, status: int = 200, content_type: str = "text/event-stream",
                     headers: dict[str, str] | None = None) -> None:
        h = self.handler
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Transfer-Encoding", "chunked")
        h.send_header("Cache-Control", "no-cache")
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.end_headers()
        h.wfile.flush()

    def chunk(self, data: str | bytes) -> bool:
        """Write one chunk; False when the client has gone away."""
        raw = data.encode() if isinstance(data, str) else data
        try:
            self.handler.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
            self.handler.wfile.flush()
            return True
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.recorded.client_disconnected.set()
            return False

    def end_stream(self) -> None:
        self.chunk(b"")  # zero-length chunk terminates the body

    def wait_for_disconnect(self, timeout: float) -> bool:
        """Hold the connection open without writing; True when the client closed it."""
        sock = self.handler.connection
        deadline = time.monotonic() + timeout
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                # Short polls notice a hang-up soon; never longer than what is left of the wait.
                sock.settimeout(min(0.05, remaining))
                try:
                    if sock.recv(1) == b"":
                        self.recorded.client_disconnected.set()
                        return True
                except TimeoutError:
                    continue
                except OSError:
                    self.recorded.client_disconnected.set()
                    return True
        finally:
            sock.settimeout(None)
        return False

    def drop(self) -> None:
        """Close the connection mid-body (no terminating chunk): the client reads everything sent so
        far, then a truncated body. Deterministic, unlike a reset, whose RST may overtake unread data."""
        self.handler.close_connection = True
        self.handler.connection.shutdown(socket.SHUT_RDWR)

    def reset(self) -> None:
        """Abort the connection with a TCP reset, as when an upstream process dies."""
        sock = self.handler.connection
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.handler.close_connection = True
        sock.close()


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # load tests open hundreds of connections at once
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The gateway hanging up on a fake (disconnect and timeout tests) is expected, not noise.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class FakeServer:
    name = "fake"

    def __init__(self, *, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[Recorded] = []
        self.steps: deque[Any] = deque()
        self.default_step: Any = None
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Without TCP_NODELAY, Nagle plus the client's delayed ACK adds ~40 ms to small answers.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                recorded = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                                    client_port=self.client_address[1])
                with server._lock:
                    server.requests.append(recorded)
                    step = server.steps.popleft() if server.steps else server.default_step
                try:
                    server.handle(recorded, step, Writer(self, recorded))
                except (BrokenPipeError, ConnectionResetError):
                    recorded.client_disconnected.set()
                finally:
                    recorded.finished.set()

            do_POST = _serve
            do_GET = _serve

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        if tls is not None:  # HTTPS: the handshake runs in accept(); a client refusing the certificate is dropped there
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name=f"{self.name}-upstream", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def script(self, *steps: Any) -> None:
        with self._lock:
            self.steps.extend(steps)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.steps.clear()

    @property
    def last(self) -> Recorded:
        return self.requests[-1]

    def handle(self, recorded: Recorded, step: Any, writer: Writer) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

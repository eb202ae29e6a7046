"""WebSocket connections served by gunicorn's gevent workers, with the `websockets` library's
sans-I/O protocol (framing, masking, fragmentation, the message size limit, ping/pong and the
closing handshake) over the request's own socket.

A view takes a connection over in two steps. `accept_upgrade()` checks the handshake and returns
the 101 response the view hands back to Django: gunicorn writes it (it passes `Upgrade:
websocket` and `Connection: upgrade` through for exactly this) and, since a 101 has no body, the
response's "streaming content" is where the connection then lives (`WebSocket.serving`). So every
middleware sees an ordinary streaming response: the access log line and the server span cover
the connection's whole life, and its metrics are recorded when it ends.

Everything runs in greenlets: the request's greenlet reads (`receive`), any greenlet may send
(`send_text`, serialised by a lock). A send blocks while the client's TCP window is full, which is
the backpressure: a slow reader stalls its producer instead of making the worker buffer, and one
that stays stalled for `write_timeout` is disconnected.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, StreamingHttpResponse
from websockets.datastructures import Headers
from websockets.exceptions import InvalidState
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from gateway_project.api_errors import ApiError
from gateway_project.concurrency import gevent_active

logger = logging.getLogger(__name__)

# What is read from the socket at once; a message may span many reads.
READ_SIZE = 65536
# How long the closing handshake may take before the TCP connection is dropped anyway.
CLOSE_TIMEOUT = 5.0


def is_upgrade(request: HttpRequest) -> bool:
    """A WebSocket opening handshake (RFC 6455 §4.1): a GET asking to upgrade to `websocket`."""
    return request.method == "GET" and "websocket" in request.headers.get("Upgrade", "").lower()


@dataclass(frozen=True)
class Limits:
    max_message_size: int
    # The client has sent nothing (no message, no pong) and nothing runs for it: close (1001).
    idle_timeout: float
    # A ping after this much silence from the client; no pong within `ping_timeout`: close (1011).
    ping_interval: float
    ping_timeout: float
    # A send that cannot complete this long (the client stopped reading): disconnect.
    write_timeout: float


class ConnectionClosed(Exception):
    """The connection is closed (or closing): nothing more can be sent on it."""


def accept_upgrade(request: HttpRequest, limits: Limits) -> tuple[WebSocket, StreamingHttpResponse]:
    """The connection and the 101 response that opens it, or the `ApiError` refusing the handshake
    (400 for a malformed one, 426 where WebSockets cannot be served)."""
    sock = request.META.get("gunicorn.socket")
    if sock is None or not gevent_active():
        # Django's development and test servers cannot hand a socket over.
        raise ApiError(426, "WebSocket connections are served by the gunicorn deployment only.",
                       code="websocket_unavailable")
    headers = Headers()
    for name, value in request.headers.items():
        headers[name] = value
    # The handshake is checked (and its answer built) by one protocol object; gunicorn has parsed
    # the request and writes the answer, so the connection's own protocol starts OPEN, reading frames.
    answer = ServerProtocol().accept(Request(request.get_full_path(), headers))
    if answer.status_code != 101:
        reason = (answer.body or b"").decode("utf-8", "replace").strip() or answer.reason_phrase
        raise ApiError(answer.status_code, reason, code="invalid_websocket_upgrade",
                       headers={"Upgrade": "websocket"} if answer.status_code == 426 else None)
    ws = WebSocket(sock, ServerProtocol(max_size=limits.max_message_size, state=State.OPEN), limits)
    response = StreamingHttpResponse(status=101)
    response.streaming_content = iter(())  # replaced by the caller with `ws.serving(...)`
    for name, value in answer.headers.raw_items():
        if name.lower() != "date":  # gunicorn writes its own
            response[name] = value
    return ws, response


class WebSocket:
    def __init__(self, sock: Any, protocol: ServerProtocol, limits: Limits) -> None:
        self._sock = sock
        self._protocol = protocol
        self.limits = limits
        self._write_lock = threading.Lock()  # a gevent lock under gunicorn (the stdlib is patched)
        self._fragments: list[bytes] = []
        self._messages: list[str] = []  # received whole, not yet returned by receive()
        # Anything from the client proves it alive (`_last_heard`); only messages and running
        # responses keep the connection from being idle (`_last_active`): pongs do not.
        self._last_heard = self._last_active = time.monotonic()
        self._ping_sent: float | None = None
        self.close_code: int | None = None
        self._close_sent: float | None = None
        self.busy = 0  # responses running for this connection: it is not idle while they run

    @property
    def open(self) -> bool:
        return self._protocol.state is State.OPEN

    # --- reading ---------------------------------------------------------------------------

    def receive(self) -> str | None:
        """The next text message; None once the connection is closed (by the client, a protocol
        error, the idle timeout or a missing pong). Pings are answered and sent in passing."""
        import gevent

        while True:
            event = self._next_event()
            if event is not None:
                self.touch()
                return event
            if self._protocol.state is State.CLOSED:
                self._finish()
                return None
            if self._protocol.close_expected() and self._close_sent is None:
                # The protocol sent a close frame of its own (a message too big, a protocol error):
                # wait for the client's answer only so long.
                self._close_sent = time.monotonic()
            data: bytes | None = None
            with gevent.Timeout(self._wait(), False):  # type: ignore[arg-type]  # False: no exception
                try:
                    data = self._sock.recv(READ_SIZE)
                except OSError:
                    data = b""
            if data is None:
                self._tick()
                continue
            self._last_heard = time.monotonic()
            if data:
                self._protocol.receive_data(data)
            else:
                self._protocol.receive_eof()
            self._flush()

    def _next_event(self) -> str | None:
        for frame in self._protocol.events_received():
            assert isinstance(frame, Frame)  # noqa: S101 - after the handshake the protocol yields frames only
            message = self._assemble(frame)
            if message is not None:
                self._messages.append(message)
        return self._messages.pop(0) if self._messages else None

    def _assemble(self, frame: Frame) -> str | None:
        if frame.opcode is Opcode.PONG:
            self._ping_sent = None
            return None
        if frame.opcode in (Opcode.PING, Opcode.CLOSE):
            return None  # answered by the protocol itself
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            self._fragments = [bytes(frame.data)]
        else:  # a continuation
            self._fragments.append(bytes(frame.data))
        if not frame.fin:
            return None
        data, self._fragments = b"".join(self._fragments), []
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            # A text frame that is not UTF-8 breaks the protocol; a binary one could only be JSON.
            self.close(CloseCode.INVALID_DATA, "messages must be UTF-8 JSON text")
            return None

    def _wait(self) -> float:
        limits = self.limits
        if self._ping_sent is not None:
            until = self._ping_sent + limits.ping_timeout
        else:
            until = self._last_heard + limits.ping_interval
        if not self.busy:
            until = min(until, self._last_active + limits.idle_timeout)
        if self._close_sent is not None:
            until = min(until, self._close_sent + CLOSE_TIMEOUT)
        return max(0.0, until - time.monotonic())

    def _tick(self) -> None:
        """Nothing was read for a while: ping, give up on a missing pong, or close an idle connection."""
        now = time.monotonic()
        limits = self.limits
        if self._close_sent is not None and now >= self._close_sent + CLOSE_TIMEOUT:
            self._abort()  # the client never answered our close frame
        elif self._ping_sent is not None and now >= self._ping_sent + limits.ping_timeout:
            logger.info("websocket: no pong within %.0f s, closing", limits.ping_timeout)
            self.close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
        elif not self.busy and now >= self._last_active + limits.idle_timeout:
            self.close(CloseCode.GOING_AWAY, "idle timeout")
        elif self._ping_sent is None and now >= self._last_heard + limits.ping_interval:
            self._ping_sent = now
            with contextlib.suppress(ConnectionClosed):
                self._send(lambda: self._protocol.send_ping(b""))

    def touch(self) -> None:
        """Something happened on the connection (a message, a response ended): the idle clock restarts."""
        self._last_active = time.monotonic()

    # --- writing ---------------------------------------------------------------------------

    def send_text(self, data: bytes) -> None:
        """Send one text message, given encoded in UTF-8 (fast_json.encode's JSON), waiting while
        the client is slow to read. Raises ConnectionClosed when the connection is closed or the
        client stopped reading."""
        self._send(lambda: self._protocol.send_text(data))

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake (idempotent); `receive()` then returns None once it is done."""
        if self.close_code is None:
            self.close_code = code
        try:
            self._send(lambda: self._protocol.send_close(code, reason))
            self._close_sent = time.monotonic()
        except ConnectionClosed:
            pass

    def _send(self, produce: Any) -> None:
        import gevent

        with self._write_lock:
            if self._protocol.state is not State.OPEN:
                raise ConnectionClosed
            try:
                produce()
            except InvalidState:
                raise ConnectionClosed from None
            try:
                with gevent.Timeout(self.limits.write_timeout):
                    self._write_out()
            except (OSError, gevent.Timeout):
                # A client that stopped reading (or is gone): nothing sent later could reach it.
                self._abort()
                raise ConnectionClosed from None

    def _flush(self) -> None:
        with self._write_lock:
            try:
                self._write_out()
            except OSError:
                self._abort()

    def _write_out(self) -> None:
        for data in self._protocol.data_to_send():
            if data:
                self._sock.sendall(data)
            else:  # the protocol is done sending: half-close
                self._shutdown(socket.SHUT_WR)

    def _abort(self) -> None:
        if self._protocol.state is not State.CLOSED:
            self._protocol.fail(CloseCode.ABNORMAL_CLOSURE)
            self._protocol.data_to_send()
        self._shutdown(socket.SHUT_RDWR)

    def _finish(self) -> None:
        """The connection is over: gunicorn must find the socket at EOF, not a next request."""
        if self.close_code is None:
            received = self._protocol.close_rcvd
            self.close_code = received.code if received else CloseCode.ABNORMAL_CLOSURE
        self._shutdown(socket.SHUT_RDWR)

    def _shutdown(self, how: int) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(how)


def serving(ws: WebSocket, run: Any) -> Iterator[bytes]:
    """The 101 response's content: an empty write makes gunicorn send the handshake, then the
    connection runs (`run()` returns when it is over) and the socket is left at EOF."""
    yield b""
    try:
        run()
    finally:
        ws._finish()

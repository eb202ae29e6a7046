"""The Responses API's WebSocket mode: `GET /v1/responses` upgraded to a WebSocket, then
`response.create` and `response.steer` events in, the same events as the SSE stream out, one
JSON text message each (docs/api.md#websocket-mode).

    reader (the request's greenlet)     parses each client event, queues creates on their lane
    lanes (a greenlet while busy)       one per `stream_id`: FIFO within a lane, lanes concurrent,
                                        at most MAX_IN_FLIGHT responses running per connection
    each response.create                the turn pipeline, exactly as over HTTP (routing, limits,
                                        storage, metrics, a span, an access log line of its own)

A `response.create` is the create body without `stream`/`background`, plus `stream_id`. Errors
that concern one request come back as `error` events and the connection stays open; each lane's
latest response, stored or not, is continued from the connection's memory
(responses_app.connection_cache), so a `store: false` one can be continued at all and a stored
one without reading its chain back from Postgres. When
the client goes, every running turn is cancelled: its upstream is closed at once, and a stored
turn is settled `incomplete`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.http import HttpRequest, StreamingHttpResponse
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from conversations_app.store import release_connection
from gateway_project import concurrency, fast_json
from gateway_project.api_errors import ApiError, invalid_request
from gateway_project.config import GatewayConfig
from gateway_project.json_body import parse_json_object
from gateway_project.middleware.errors import database_unavailable_error, internal_error, is_database_unavailable
from gateway_project.observability import context as obs_context
from gateway_project.observability import metrics, metrics_enabled, tracing
from gateway_project.request_notes import notes_of
from gateway_project.websocket import ConnectionClosed, Limits, WebSocket, accept_upgrade, serving
from responses_app import pipeline, steering
from responses_app.cancellation import CLIENT_GONE, CancelToken
from responses_app.connection_cache import ConnectionCache
from responses_app.context import TurnContext
from responses_app.schema import CreateResponseRequest, MessageItem, create_request_from

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("gateway.access")

# OpenAI's limits per connection: responses running at once (more are queued, not refused), and
# distinct named lanes over the connection's life (the default lane is not counted).
MAX_IN_FLIGHT = 16
MAX_NAMED_LANES = 32
STREAM_ID = re.compile(r"[A-Za-z0-9_.-]{1,256}")
# How long a connection that is going away waits for its running responses to settle.
SETTLE_WAIT = 10.0
# The `method` label of a response made over a WebSocket in the seed's http_* families.
WEBSOCKET_METHOD = "WEBSOCKET"
ROUTE = "v1/responses"


def serve(request: HttpRequest) -> StreamingHttpResponse:
    """Take the upgrade request over: the 101 response whose content is the connection's life."""
    config: GatewayConfig = settings.GATEWAY
    ws_config = config.server.websocket
    if not ws_config.enabled:
        raise ApiError(426, "The WebSocket mode is disabled on this gateway; use POST /v1/responses.",
                       code="websocket_disabled")
    limits = Limits(max_message_size=ws_config.max_message_size or config.server.max_request_body_size,
                    idle_timeout=ws_config.idle_timeout, ping_interval=ws_config.ping_interval,
                    ping_timeout=ws_config.ping_timeout, write_timeout=ws_config.write_timeout)
    ws, response = accept_upgrade(request, limits)
    session = Session(request, ws, config)
    # The upgrade itself is not charged to the rate limits; every response.create is.
    notes_of(request).rate_decided = True
    response.streaming_content = serving(ws, session.run)
    return response


@dataclass
class Job:
    data: dict[str, Any]
    size: int
    # Steering input queued for this response's parent, prepended to its input (responses_app.steering).
    prefix: list[MessageItem] = field(default_factory=list)
    # A successor the gateway starts itself after a steered response, and the steers it commits.
    inherited: CreateResponseRequest | None = None
    steers: list[steering.Steer] = field(default_factory=list)


class Lane:
    """One `stream_id`'s responses, strictly one after another."""

    def __init__(self, session: Session, stream_id: str | None) -> None:
        self.session = session
        self.stream_id = stream_id
        self.queue: deque[Job] = deque()
        self.worker: concurrency.Background | None = None
        self.cancel: CancelToken | None = None  # the running response's

    def submit(self, job: Job) -> None:
        self.queue.append(job)
        if self.worker is None:
            self.worker = concurrency.start(self._work, name="websocket-lane")

    def _work(self) -> None:
        session = self.session
        try:
            while self.queue and not session.gone:
                job = self.queue.popleft()
                with session.in_flight:
                    if session.gone:
                        break
                    session.respond(self, job)
        finally:
            self.worker = None
            self.queue.clear()
            session.lane_idle()

    def stop(self) -> None:
        self.queue.clear()
        if self.cancel is not None:
            self.cancel.cancel(CLIENT_GONE)


class Session:
    def __init__(self, request: HttpRequest, ws: WebSocket, config: GatewayConfig) -> None:
        notes = notes_of(request)
        self.connection_id = notes.request_id
        self.identity = notes.identity
        self.gate = notes.rate_gate
        self.config = config
        self.ws = ws
        self.cache = ConnectionCache()
        self.lanes: dict[str | None, Lane] = {}
        self.named_lanes: set[str] = set()
        self.in_flight = threading.BoundedSemaphore(MAX_IN_FLIGHT)
        self._numbering = threading.Lock()
        self.steering = steering.Steering(self)
        # The connection's server span (tracing middleware): each response's span is its child.
        self.trace_context = otel_context.get_current()
        self.expires = time.monotonic() + config.server.websocket.max_connection_age
        self.gone = False  # the client left or the connection closed: nothing more is sent
        self.draining = False  # the worker is shutting down: no new responses, close when idle

    # --- the reader ----------------------------------------------------------------------

    def run(self) -> None:
        # The upgrade's own database work (the API key, the rate limits) is done: give its pooled
        # connection back, or every open socket would hold one for its whole life.
        release_connection()
        _sessions.add(self)
        if metrics_enabled():
            metrics.websocket_connections.inc()
        try:
            while True:
                text = self.ws.receive()
                if text is None:
                    break
                self._dispatch(text)
        finally:
            self.gone = True
            _sessions.discard(self)
            self._hang_up()
            if metrics_enabled():
                metrics.websocket_connections.dec()

    def _dispatch(self, text: str) -> None:
        try:
            data = parse_json_object(text.encode("utf-8"))
        except ApiError as error:
            self.send_error(error)
            return
        kind = data.pop("type", None)
        if kind == "response.create":
            self._create(data, len(text))
        elif kind == "response.steer":
            self.steering.steer(data)
        else:
            self.send_error(invalid_request(
                f"Invalid value for 'type': {kind!r}. Supported client events: 'response.create', "
                "'response.steer'.", param="type", code="invalid_value"))

    def _create(self, data: dict[str, Any], size: int) -> None:
        stream_id = data.pop("stream_id", None)
        if stream_id is not None and (not isinstance(stream_id, str) or not STREAM_ID.fullmatch(stream_id)):
            self.send_error(invalid_request(
                "The 'stream_id' field must be a non-empty string with at most 256 characters and may only "
                "contain letters, numbers, underscores, hyphens, and periods.", param="stream_id",
                code="invalid_stream_id"))
            return
        if stream_id is not None and stream_id not in self.named_lanes:
            if len(self.named_lanes) >= MAX_NAMED_LANES:
                self.send_error(invalid_request(
                    f"This WebSocket connection has reached its maximum number of distinct stream IDs "
                    f"({MAX_NAMED_LANES}). Reuse an existing stream_id or open a new WebSocket connection.",
                    param="stream_id", code="websocket_stream_limit_reached"), stream_id)
                return
            self.named_lanes.add(stream_id)
        if time.monotonic() >= self.expires:
            minutes = round(self.config.server.websocket.max_connection_age / 60)
            self.send_error(invalid_request(
                f"Responses websocket connection limit reached ({minutes} minutes). Create a new websocket "
                "connection to continue.", code="websocket_connection_limit_reached"))
            self._close_when_idle()
            return
        if self.draining:
            self.send_error(ApiError(503, "The server is restarting; open a new connection.", type="server_error",
                                     code="server_shutting_down"), stream_id)
            return
        lane = self.lanes.get(stream_id)
        if lane is None:
            lane = self.lanes[stream_id] = Lane(self, stream_id)
        lane.submit(Job(data, size, prefix=self.steering.take_queued(data.get("previous_response_id"))))

    # --- one response --------------------------------------------------------------------

    def respond(self, lane: Lane, job: Job) -> None:
        """One response.create through the turn pipeline, its events sent as they come."""
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        scope = obs_context.RequestScope(request_id)
        scope_token = obs_context.current.set(scope)
        span = tracing.tracer().start_span("websocket response.create", context=self.trace_context,
                                           kind=SpanKind.SERVER)
        if span.is_recording():
            span.set_attributes({"http.request_id": request_id, "http.route": ROUTE, "gateway.transport": "websocket",
                                 "websocket.connection_id": self.connection_id,
                                 **({"websocket.stream_id": lane.stream_id} if lane.stream_id else {})})
        span_token = otel_context.attach(trace.set_span_in_context(span, self.trace_context))
        ctx = TurnContext(request_id=request_id, identity=self.identity, config=self.config, cancel=CancelToken(),
                          deadline=time.monotonic() + self.config.server.turn_timeout, heartbeat=None,
                          gate=self.gate, connection_cache=self.cache)
        lane.cancel = ctx.cancel
        self.ws.busy += 1
        outcome = Outcome()
        try:
            self._run_turn(lane, job, ctx, outcome)
        finally:
            lane.cancel = None
            self.ws.busy -= 1
            self.ws.touch()
            if ctx.ticket is not None:
                ctx.ticket.settle()
            self._after(lane, job, outcome)
            elapsed = time.perf_counter() - started
            self._observe(lane, job, outcome, elapsed, scope)
            if span.is_recording():
                span.set_attribute("http.status_code", outcome.status)
                if outcome.response_id:
                    span.set_attribute("gen_ai.response.id", outcome.response_id)
                if outcome.status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            span.end()
            otel_context.detach(span_token)
            obs_context.current.reset(scope_token)

    def _run_turn(self, lane: Lane, job: Job, ctx: TurnContext, outcome: Outcome) -> None:
        running: steering.Running | None = None
        turn: pipeline.Turn | None = None
        try:
            create = job.inherited or self._create_request(job.data)
            if job.prefix:
                create.input_items = _with_steering(job.prefix, create.input_items)
            outcome.previous = create.previous_response_id
            turn = outcome.turn = pipeline.start_turn(ctx, create, body_bytes=job.size)
            outcome.response_id = turn.response_id
            running = self.steering.started(lane, turn)
            events = pipeline.open_stream(turn, steer=running.boundary_check if running.steerable else None)
        except Exception as failure:  # noqa: BLE001 - every failure is told to the client as HTTP would
            error = _as_api_error(failure)
            outcome.status = error.status
            outcome.error = error
            if job.steers:  # the steering input is handed back; no response was created
                self.steering.successor_failed(job.steers, error, lane.stream_id)
            else:
                self.send_error(error, lane.stream_id)
            if running is not None and turn is not None:
                self.steering.ended(lane, turn, running)
            return
        try:
            for batch in events:  # a message per event, as each batch comes (pipeline.turn_events)
                for event in batch:
                    if event is not None:  # None is a keep-alive: the WebSocket has its own pings
                        outcome.sent_bytes += self.send_numbered(event, running, lane.stream_id)
        except ConnectionClosed:
            outcome.status = 499
        except Exception as failure:  # noqa: BLE001 - the turn settled itself; the lane goes on
            error = outcome.error = _as_api_error(failure)
            outcome.status = error.status
            self.send_error(error, lane.stream_id)
        finally:
            events.close()  # type: ignore[attr-defined]
            self.steering.ended(lane, turn, running)

    def _create_request(self, data: dict[str, Any]) -> CreateResponseRequest:
        if data.get("background"):
            raise invalid_request("'background' is not supported over a WebSocket; every response is streamed "
                                  "on the connection.", param="background", code="unsupported_parameter")
        # Streaming is implicit over a WebSocket: whatever `stream` says, the events are sent.
        data.pop("background", None)
        data.pop("stream_options", None)
        data["stream"] = True
        return create_request_from(data)

    def _after(self, lane: Lane, job: Job, outcome: Outcome) -> None:
        """Keep the lane's latest response, stored or not; drop the parent of a continuation that failed."""
        turn = outcome.turn
        status = turn.final_status if turn is not None else "failed"
        # A turn of the Conversations API is continued through its conversation, not from here.
        if turn is not None and status in ("completed", "incomplete") and not turn.api_conversation:
            self.cache.put(lane.stream_id, turn.context_after())
        failed = outcome.error is not None or status == "failed"
        if failed and outcome.previous and self.cache.lane_of(outcome.previous) == lane.stream_id:
            # A fork from another lane that fails keeps the shared parent, so that lane can go on.
            self.cache.evict(outcome.previous)
        if turn is not None and outcome.status == 200 and status == "failed":
            outcome.status = 500  # told in a response.failed event; counted as a server error

    def _observe(self, lane: Lane, job: Job, outcome: Outcome, elapsed: float, scope: obs_context.RequestScope) -> None:
        if metrics_enabled():
            metrics.observe_request(WEBSOCKET_METHOD, ROUTE, outcome.status, elapsed, request_size=job.size,
                                    response_size=outcome.sent_bytes, upstream_seconds=scope.upstream_seconds)
        fields: dict[str, Any] = {
            "method": WEBSOCKET_METHOD, "path": "/" + ROUTE, "route": ROUTE, "status": outcome.status,
            "duration_ms": round(elapsed * 1000, 2), "connection_id": self.connection_id,
            "response_id": outcome.response_id}
        if lane.stream_id is not None:
            fields["stream_id"] = lane.stream_id
        error = outcome.error
        if error is not None:
            fields.update(error_type=error.type, error_code=error.code, error_param=error.param,
                          error_message=error.message[:300])
        access_logger.info("request", extra=fields)

    # --- sending -------------------------------------------------------------------------

    def send_numbered(self, event: dict[str, Any], running: steering.Running | None, stream_id: str | None) -> int:
        """Send one event of a response's stream (or about it: steering), numbered in that stream;
        its size. Raises ConnectionClosed when the client is gone."""
        with self._numbering:  # numbered in the order sent, whichever greenlet sends
            payload = {"type": event["type"]}
            if running is not None:
                payload["sequence_number"] = running.next_sequence()
            payload.update((k, v) for k, v in event.items() if k != "type")
            if stream_id is not None:
                payload["stream_id"] = stream_id
            return self.send(payload)

    def send(self, payload: dict[str, Any]) -> int:
        """Send one server event; its size. Raises ConnectionClosed when the client is gone."""
        if self.gone:
            raise ConnectionClosed
        data = fast_json.encode(payload)
        try:
            self.ws.send_text(data)
        except ConnectionClosed:
            self._client_gone()
            raise
        return len(data)

    def send_error(self, error: ApiError, stream_id: str | None = None) -> None:
        body: dict[str, Any] = {"type": error.type, "code": error.code, "message": error.message, "param": error.param}
        if error.headers:
            body["headers"] = dict(error.headers)
        payload: dict[str, Any] = {"type": "error", "status": error.status, "error": body}
        if stream_id is not None:
            payload["stream_id"] = stream_id
        with contextlib.suppress(ConnectionClosed):
            self.send(payload)

    # --- ending --------------------------------------------------------------------------

    def _client_gone(self) -> None:
        """The client left (or stopped reading): stop every running response now."""
        if not self.gone:
            self.gone = True
            for lane in list(self.lanes.values()):
                lane.stop()
            self.ws.close()

    def _hang_up(self) -> None:
        self._client_gone()
        for lane in list(self.lanes.values()):
            lane.stop()
        self.steering.connection_closed()
        deadline = time.monotonic() + SETTLE_WAIT
        for lane in list(self.lanes.values()):
            worker = lane.worker
            if worker is not None:
                worker.join(max(0.0, deadline - time.monotonic()))

    def lane_idle(self) -> None:
        if (self.draining or time.monotonic() >= self.expires) and self.idle:
            self.ws.close(1001, "going away")

    @property
    def idle(self) -> bool:
        return all(lane.worker is None for lane in self.lanes.values())

    def _close_when_idle(self) -> None:
        if self.idle:
            self.ws.close(1001, "connection limit reached")

    def drain(self) -> None:
        """The worker is shutting down: take nothing new, close once the running responses end (their
        turns are cut like any other shortly before the graceful timeout)."""
        self.draining = True
        if self.idle:
            self.ws.close(1001, "server restarting")


def _as_api_error(failure: Exception) -> ApiError:
    """What HTTP would have answered (gateway_project.middleware.errors), as an `error` event's content."""
    if isinstance(failure, ApiError):
        return failure
    where = f"{WEBSOCKET_METHOD} /{ROUTE}"
    if is_database_unavailable(failure):
        return database_unavailable_error(failure, where)
    return internal_error(failure, where)


def _with_steering(steering_items: list[MessageItem], items: list[Any]) -> list[Any]:
    """Queued steering input goes first in the request that continues its response, except that the
    tool outputs answering that response's calls stay right after them: every provider requires it."""
    answers = 0
    while answers < len(items) and getattr(items[answers], "type", "").endswith("_output"):
        answers += 1
    return [*items[:answers], *steering_items, *items[answers:]]


@dataclass
class Outcome:
    status: int = 200
    error: ApiError | None = None
    turn: pipeline.Turn | None = None
    response_id: str | None = None
    previous: str | None = None
    sent_bytes: int = 0


class _Sessions:
    def __init__(self) -> None:
        self._open: set[Session] = set()

    def add(self, session: Session) -> None:
        self._open.add(session)

    def discard(self, session: Session) -> None:
        self._open.discard(session)

    def __len__(self) -> int:
        return len(self._open)

    def drain(self) -> int:
        sessions = list(self._open)
        for session in sessions:
            session.drain()
        return len(sessions)

    def each(self) -> Iterator[Session]:
        return iter(list(self._open))


_sessions = _Sessions()


def drain_all() -> int:
    """Worker shutdown (responses_app.worker_lifecycle): every connection closes once idle."""
    return _sessions.drain()


def open_connections() -> int:
    return len(_sessions)


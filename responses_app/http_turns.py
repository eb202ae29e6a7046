"""One turn run for an HTTP request, answered as JSON or as an event stream, whatever API surface
(`/v1/responses`, `/v1/chat/completions`, `/v1/messages`) the client speaks.

A surface's view parses its own body into a `CreateResponseRequest` and renders the turn in its own
shapes; everything between (routing, limits, storage, the upstream, metrics, the client watch that
cancels the upstream when the client hangs up) is the one pipeline (responses_app.pipeline).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from gateway_project import fast_json
from responses_app import pipeline
from responses_app.client_watch import until_done, watch_client
from responses_app.context import TurnContext
from responses_app.schema import CreateResponseRequest

R = TypeVar("R", HttpResponse, StreamingHttpResponse)

# A surface's stream renderer: given the turn, the function that renders each of its Responses
# events in turn (None where a keep-alive belongs, the upstream being silent) as the surface's SSE
# frames, none or more. The frames of one batch of events (pipeline.turn_events) go out in one write.
Renderer = Callable[[pipeline.Turn], Callable[[dict[str, Any] | None], Iterable[str]]]


def run_json(request: HttpRequest, create: CreateResponseRequest,
             ctx: TurnContext | None = None) -> tuple[pipeline.Turn, dict[str, Any]]:
    """The finished turn and its Responses object. While the turn waits on the upstream, a client
    that hangs up cancels it (client_watch)."""
    ctx = ctx or TurnContext.for_request(request)
    watch = watch_client(request, ctx.cancel)
    try:
        turn = pipeline.start_turn(ctx, create, body_bytes=len(request.body))
        return turn, pipeline.respond_json(turn)
    finally:
        watch.stop()


def run_stream(request: HttpRequest, create: CreateResponseRequest, render: Renderer,
               ctx: TurnContext | None = None) -> StreamingHttpResponse:
    """The turn as a `text/event-stream` response. A failure before the upstream's first event is
    raised here (an HTTP error status); after it, the renderer tells the client in its stream."""
    ctx = ctx or TurnContext.for_request(request)
    watch = watch_client(request, ctx.cancel)
    try:
        turn = pipeline.start_turn(ctx, create, body_bytes=len(request.body))
        batches = pipeline.open_stream(turn)
    except BaseException:
        watch.stop()
        raise
    response = StreamingHttpResponse(until_done(_rendered(turn, batches, render), watch),
                                     content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return with_turn_headers(response, turn)


def _rendered(turn: pipeline.Turn, batches: Iterator[pipeline.Batch], render: Renderer) -> Iterator[str]:
    # One string, so one write, per batch: the frames the pipeline has in hand at once (it yields a
    # batch before it waits on the upstream again, so no frame waits for a later one). Closing the
    # batches settles the turn (pipeline.turn_events) when the server stops reading early.
    frames = render(turn)
    try:
        for batch in batches:
            if data := "".join([frame for event in batch for frame in frames(event)]):
                yield data
    finally:
        batches.close()  # type: ignore[attr-defined]


def json_response(turn: pipeline.Turn, body: dict[str, Any]) -> HttpResponse:
    return with_turn_headers(fast_json.response(body), turn)


def with_turn_headers(response: R, turn: pipeline.Turn) -> R:
    if turn.dropped_tools:
        # Hosted tools the serving provider has no equivalent for (its `unsupported_tools: drop`).
        response["X-Gateway-Dropped-Tools"] = ", ".join(turn.dropped_tools)
    return response

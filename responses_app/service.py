"""The create-response use case: route the model, load the chain, call the provider, store the turn.

The view hands over a validated request and gets back either a Response body (JSON) or an
iterator of SSE frames. Failures found before the first upstream event are `ApiError`s (an HTTP
status); failures after the stream started end it with `response.failed` and are stored as such.
A turn is committed before the client sees `response.completed` or the JSON body, so an
immediate follow-up with `previous_response_id` always finds it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone

from conversations_app.store import Chain, NewTurn, release_connection, store
from gateway_project.api_errors import ApiError, invalid_request
from responses_app.assembler import OutputAssembler
from responses_app.ids import new_id
from responses_app.items import canonical_items
from responses_app.providers.base import Event, ProviderError, ProviderRequest
from responses_app.providers.registry import Route, get_registry
from responses_app.response_object import echoed_settings, render_response
from responses_app.schema import CreateResponseRequest
from responses_app.sse import SseEncoder

logger = logging.getLogger(__name__)


@dataclass
class Turn:
    request: CreateResponseRequest
    owner: str
    route: Route
    chain: Chain | None
    input_items: list[dict[str, Any]]
    response_id: str
    created_at: datetime
    settings: dict[str, Any]
    # Told the real usage once the turn ends (the rate limiter reconciles its token reservation).
    on_usage: Callable[[dict[str, int] | None], None] | None = None

    def provider_request(self) -> ProviderRequest:
        req = self.request
        history = self.chain.items if self.chain else []
        return ProviderRequest(
            model=self.route.upstream_model, items=history + self.input_items, instructions=req.instructions,
            temperature=req.temperature, top_p=req.top_p, max_output_tokens=req.max_output_tokens,
            tools=self.settings["tools"], tool_choice=self.settings["tool_choice"],
            parallel_tool_calls=req.parallel_tool_calls, text_format=self.settings["text"].get("format"),
            user=req.user,
        )

    def render(self, status: str, assembler: OutputAssembler | None = None, *,
               error: dict[str, Any] | None = None, completed_at: datetime | None = None) -> dict[str, Any]:
        return render_response(
            response_id=self.response_id, created_at=self.created_at, status=status, model=self.request.model,
            instructions=self.request.instructions, settings=self.settings,
            output=assembler.output if assembler else [],
            usage=_usage(assembler), error=error,
            incomplete_details=assembler.incomplete_details if assembler and status == "incomplete" else None,
            completed_at=completed_at,
        )


def _usage(assembler: OutputAssembler | None) -> dict[str, int] | None:
    return assembler.usage.as_dict() if assembler and assembler.usage else None


def prepare_turn(request: CreateResponseRequest, owner: str) -> Turn:
    route = get_registry().route(request.model)
    chain = None
    if request.previous_response_id:
        chain = store.get_chain(request.previous_response_id, owner)
        if chain is None:
            raise invalid_request(f"Previous response with id '{request.previous_response_id}' not found.",
                                  param="previous_response_id", code="previous_response_not_found")
    # Nothing below needs the database until the turn is stored: don't hold a connection
    # through the upstream wait.
    release_connection()
    return Turn(request=request, owner=owner, route=route, chain=chain,
                input_items=canonical_items(request.input_items), response_id=new_id("resp"),
                created_at=timezone.now(), settings=echoed_settings(request))


def _api_error(error: ProviderError) -> ApiError:
    if error.kind == "bad_request":
        return ApiError(400, error.message, code="upstream_bad_request")
    headers = {}
    if error.kind == "rate_limited":
        headers["Retry-After"] = str(max(1, round(error.retry_after or 1)))
        return ApiError(429, error.message, type="requests", code="rate_limit_exceeded", headers=headers)
    return ApiError(error.status, error.message, type="server_error",
                    code="upstream_timeout" if error.kind == "timeout" else "upstream_error")


def _error_object(error: ProviderError) -> dict[str, str]:
    code = "rate_limit_exceeded" if error.kind == "rate_limited" else "server_error"
    return {"code": code, "message": error.message}


def _cost(turn: Turn, assembler: OutputAssembler) -> float | None:
    """At the prices of the model that answered: a fallback's, when one took over."""
    usage = assembler.usage
    return turn.route.provider.serving.model.cost_usd(usage.input_tokens, usage.output_tokens) if usage else None


def _store_turn(turn: Turn, assembler: OutputAssembler, status: str, *, completed_at: datetime | None,
                error: dict[str, Any] | None = None) -> None:
    if turn.on_usage is not None:
        turn.on_usage(_usage(assembler))
    if not turn.request.store:
        return
    settings = {k: v for k, v in turn.settings.items() if k != "previous_response_id"}
    store.save_turn(
        NewTurn(
            response_id=turn.response_id, owner=turn.owner, model=turn.request.model,
            provider=turn.route.provider.key, status=status, created_at=turn.created_at,
            completed_at=completed_at, instructions=turn.request.instructions, settings=settings,
            usage=_usage(assembler), input_items=turn.input_items, output_items=assembler.output,
            error=error, incomplete_details=assembler.incomplete_details if status == "incomplete" else None,
            cost_usd=_cost(turn, assembler),
        ),
        parent=turn.chain,
    )
    release_connection()


def respond_json(turn: Turn) -> dict[str, Any]:
    assembler = OutputAssembler()
    try:
        for event in turn.route.provider.generate(turn.provider_request()):
            assembler.feed(event)
    except ProviderError as error:
        raise _api_error(error) from None
    assembler.finish()
    completed_at = timezone.now() if assembler.status == "completed" else None
    _store_turn(turn, assembler, assembler.status, completed_at=completed_at)
    return turn.render(assembler.status, assembler, completed_at=completed_at)


def respond_stream(turn: Turn) -> Iterator[str]:
    """Start the upstream stream now (so early failures are HTTP errors), then return the frames."""
    events = turn.route.provider.stream(turn.provider_request())
    try:
        first = next(events, None)
    except ProviderError as error:
        events.close()
        raise _api_error(error) from None
    return _frames(turn, first, events)


def _frames(turn: Turn, first: Event | None, events: Iterator[Event]) -> Iterator[str]:
    sse = SseEncoder()
    assembler = OutputAssembler()
    finished = False
    try:
        yield sse.frame({"type": "response.created", "response": turn.render("in_progress")})
        yield sse.frame({"type": "response.in_progress", "response": turn.render("in_progress")})
        pending = [first] if first is not None else []
        try:
            for event in _chain(pending, events):
                for frame in assembler.feed(event):
                    yield sse.frame(frame)
        except ProviderError as error:
            logger.warning("upstream failed mid-stream: %s", error.message)
            assembler.abandon()
            error_object = _error_object(error)
            _store_turn(turn, assembler, "failed", completed_at=None, error=error_object)
            finished = True
            yield sse.frame({"type": "response.failed", "response": turn.render("failed", assembler, error=error_object)})
            return
        for frame in assembler.finish():
            yield sse.frame(frame)
        status = assembler.status
        completed_at = timezone.now() if status == "completed" else None
        try:
            _store_turn(turn, assembler, status, completed_at=completed_at)
        except Exception:
            # Never claim `completed` for a turn a follow-up could not find: say it failed.
            logger.exception("could not store response %s", turn.response_id)
            finished = True
            error_object = {"code": "server_error", "message": "The response could not be stored; retry the request."}
            yield sse.frame({"type": "response.failed", "response": turn.render("failed", assembler, error=error_object)})
            return
        finished = True
        terminal = "response.completed" if status == "completed" else "response.incomplete"
        yield sse.frame({"type": terminal, "response": turn.render(status, assembler, completed_at=completed_at)})
    finally:
        # Client gone (GeneratorExit) or any other exit: drop the upstream connection now, and keep
        # what was said so far as an incomplete turn.
        events.close()  # type: ignore[attr-defined]
        if not finished:
            assembler.abandon()
            try:
                _store_turn(turn, assembler, "incomplete", completed_at=None)
            except Exception:
                logger.exception("could not store the interrupted response %s", turn.response_id)


def _chain(first: list[Event], rest: Iterator[Event]) -> Iterator[Event]:
    yield from first
    yield from rest


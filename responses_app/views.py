"""The public API. Views stay thin: parse, build the turn context, call the pipeline or the store, render."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial, wraps
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from conversations_app.store import ItemPage, StoredTurn, UnknownCursor, store
from gateway_project.api_errors import ApiError, invalid_request, not_found
from gateway_project.config import ModelEntry
from gateway_project.middleware.ratelimit import admitted_by_view
from gateway_project.readiness import check_database
from gateway_project.request_notes import notes_of
from gateway_project.websocket import is_upgrade
from responses_app import background, compact, http_turns, input_tokens, pipeline, replay, websocket_mode
from responses_app.client_watch import until_done, watch_client
from responses_app.context import TurnContext
from responses_app.providers.registry import get_registry
from responses_app.schema import CreateResponseRequest, parse_create_request

View = Callable[..., HttpResponse | StreamingHttpResponse]


def api_view(*methods: str, websocket: View | None = None) -> Callable[[View], View]:
    """CSRF-exempt (the SDK sends a bearer token, no cookie) and a JSON 405 for other methods. A GET
    route answers HEAD too, as HTTP expects (load balancers probe with it); the server sends no body.
    `websocket`: the view that takes a WebSocket upgrade of this route over."""
    if "GET" in methods:
        methods = (*methods, "HEAD")

    def decorate(view: View) -> View:
        @csrf_exempt
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse | StreamingHttpResponse:
            if websocket is not None and is_upgrade(request):
                return websocket(request, *args, **kwargs)
            if request.method not in methods:
                error = ApiError(405, f"Method {request.method} is not allowed on {request.path}.",
                                 code="method_not_allowed", headers={"Allow": ", ".join(methods)})
                return error.response()
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


def owner_of(request: HttpRequest) -> str:
    """The identity that owns what this request creates or reads ('' when auth is off)."""
    return notes_of(request).owner


@api_view("POST", websocket=websocket_mode.serve)
@admitted_by_view
def create_response(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    create = parse_create_request(request.body)
    ctx = TurnContext.for_request(request)
    if create.background:
        return _create_in_background(request, ctx, create)
    if create.stream:
        return http_turns.run_stream(request, create, pipeline.sse_frames, ctx)
    turn, body = http_turns.run_json(request, create, ctx)
    return http_turns.json_response(turn, body)


def _create_in_background(request: HttpRequest, ctx: TurnContext,
                          create: CreateResponseRequest) -> HttpResponse | StreamingHttpResponse:
    """The turn runs on after this request (responses_app.background); a client hang-up does not
    stop it, only a cancel does."""
    # Nobody reads the runner's stream (followers send keep-alives of their own), so its upstream
    # is read without a helper (providers.guard._streamed_inline).
    ctx.heartbeat = None
    turn = pipeline.start_turn(ctx, create, body_bytes=len(request.body))
    background.start(turn)
    if not create.stream:
        return JsonResponse(turn.render("in_progress"))
    stored = store.get_response(turn.response_id, ctx.owner)
    if stored is None:  # deleted already, between two lines: nothing to follow
        raise _response_not_found(turn.response_id)
    return _replay(request, stored)


def _response_not_found(response_id: str) -> ApiError:
    return not_found(f"Response with id '{response_id}' not found.")


def one_call(request: HttpRequest, work: Callable[[TurnContext, bytes], dict[str, Any]]) -> HttpResponse:
    """A JSON answer made with one upstream call, which a client that hangs up cancels."""
    ctx = TurnContext.for_request(request)
    watch = watch_client(request, ctx.cancel)
    try:
        return JsonResponse(work(ctx, request.body))
    finally:
        watch.stop()


@api_view("POST")
def count_input_tokens(request: HttpRequest) -> HttpResponse:
    """POST /v1/responses/input_tokens (responses_app.input_tokens). Not `admitted_by_view`: the
    rate limiter charges it one request and no tokens, as it generates nothing."""
    return one_call(request, input_tokens.count_input_tokens)


@api_view("POST")
@admitted_by_view
def compact_response(request: HttpRequest) -> HttpResponse:
    """POST /v1/responses/compact (responses_app.compact): charged as a turn, once the body is read."""
    return one_call(request, compact.compact)


def _stream_param(request: HttpRequest) -> bool:
    raw = request.GET.get("stream")
    if raw is None or raw.lower() == "false":
        return False
    if raw.lower() == "true":
        return True
    raise invalid_request("Invalid value for 'stream': expected true or false.", param="stream", code="invalid_value")


def _starting_after(raw: str | None) -> int:
    if raw is None:
        return -1
    if not _NUMBER.fullmatch(raw):
        raise invalid_request("Invalid value for 'starting_after': expected a non-negative integer.",
                              param="starting_after", code="invalid_value")
    return int(raw)


def _replay(request: HttpRequest, stored: StoredTurn) -> StreamingHttpResponse:
    """GET with stream=true: the response's events as SSE. A background response's come from its
    event log, numbered as they were first sent (responses_app.background); otherwise, or when
    that log is gone, they are rebuilt from what is stored (responses_app.replay)."""
    starting_after = _starting_after(request.GET.get("starting_after"))
    ctx = TurnContext.for_request(request)
    # A follow of a running turn waits; a client that hangs up ends it (client_watch), not the turn.
    watch = watch_client(request, ctx.cancel)
    frames = None
    if stored.settings.get("background"):
        frames = background.follow(stored, owner=ctx.owner, config=ctx.config, starting_after=starting_after,
                                   cancel=ctx.cancel)
    if frames is None:
        frames = replay.replay(stored, owner=ctx.owner, config=ctx.config, starting_after=starting_after,
                               cancel=ctx.cancel)
    response = StreamingHttpResponse(until_done(frames, watch), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


@api_view("GET", "DELETE")
def response_detail(request: HttpRequest, response_id: str) -> HttpResponse | StreamingHttpResponse:
    owner = owner_of(request)
    if request.method == "DELETE":
        if not store.delete_response(response_id, owner):
            raise _response_not_found(response_id)
        return JsonResponse({"id": response_id, "object": "response", "deleted": True})
    stream = _stream_param(request)
    stored = store.get_response(response_id, owner)
    if stored is None:
        raise _response_not_found(response_id)
    if stream and request.method == "GET":
        return _replay(request, stored)
    return JsonResponse(replay.render_stored(stored))


@api_view("POST")
def cancel_response(request: HttpRequest, response_id: str) -> HttpResponse:
    """Only background responses can be cancelled; one that has ended already is returned as it is."""
    owner = owner_of(request)
    stored = store.get_response(response_id, owner)
    if stored is None:
        raise _response_not_found(response_id)
    if not stored.settings.get("background"):
        raise invalid_request("Only responses created with 'background: true' can be cancelled.",
                              param="response_id", code="invalid_value")
    stored = background.cancel(response_id, owner)
    if stored is None:  # deleted meanwhile
        raise _response_not_found(response_id)
    return JsonResponse(replay.render_stored(stored))


# ASCII digits only: str.isdigit() also says yes to '²' and other digits int() refuses, and int()
# refuses more than 4,300 digits; either was a 500.
_NUMBER = re.compile(r"[0-9]{1,9}")


def _limit(raw: str | None) -> int:
    if raw is None:
        return 20
    if not _NUMBER.fullmatch(raw) or not 1 <= int(raw) <= 100:
        raise invalid_request("Invalid value for 'limit': expected an integer from 1 to 100.", param="limit",
                              code="invalid_value")
    return int(raw)


def list_page(request: HttpRequest, lister: Callable[..., ItemPage | None], of: str) -> ItemPage | None:
    """One page of a list route, with its cursor paging: `limit` 1-100 (default 20), `order`
    (default desc), `after` (an item id; one that names no item of the `of` being listed is a 400).
    `lister` is called with them; None from it means the listed thing does not exist."""
    order = request.GET.get("order", "desc")
    if order not in ("asc", "desc"):
        raise invalid_request("Invalid value for 'order': expected 'asc' or 'desc'.", param="order",
                              code="invalid_value")
    try:
        return lister(limit=_limit(request.GET.get("limit")), order=order, after=request.GET.get("after"))
    except UnknownCursor:
        raise invalid_request(f"Invalid value for 'after': no such item in this {of}.", param="after",
                              code="invalid_value") from None


@api_view("GET")
def response_input_items(request: HttpRequest, response_id: str) -> HttpResponse:
    page = list_page(request, partial(store.list_input_items, response_id, owner_of(request)), "response")
    if page is None:
        raise _response_not_found(response_id)
    return JsonResponse({
        "object": "list", "data": page.items, "has_more": page.has_more,
        "first_id": page.items[0]["id"] if page.items else None,
        "last_id": page.items[-1]["id"] if page.items else None,
    })


def _model_object(name: str, model: ModelEntry) -> dict[str, Any]:
    """The SDK's `Model`. `created` is 0: a configured name has no creation time of its own."""
    return {"id": name, "object": "model", "created": 0, "owned_by": model.provider}


def _may_use(request: HttpRequest, model: ModelEntry) -> bool:
    # A key limited to some models sees only those (identity_app.identity.Identity.may_use).
    identity = notes_of(request).identity
    return identity is None or identity.may_use(model)


@api_view("GET")
def list_models(request: HttpRequest) -> HttpResponse:
    """Every model the caller may use, under its name and then under each of its aliases."""
    data = [_model_object(name, m) for m in settings.GATEWAY.models if _may_use(request, m)
            for name in (m.name, *m.aliases)]
    return JsonResponse({"object": "list", "data": data})


@api_view("GET")
def model_detail(request: HttpRequest, model_id: str) -> HttpResponse:
    model = settings.GATEWAY.model(model_id)
    if model is None or not _may_use(request, model):
        # The same answer for a model the key may not use: a key cannot probe for others.
        raise ApiError(404, f"The model '{model_id}' does not exist or you do not have access to it.",
                       param="model", code="model_not_found")
    return JsonResponse(_model_object(model_id, model))


@api_view("GET")
def health(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "healthy"})


def providers_check() -> str:
    problems = settings.GATEWAY.missing_key_warnings()
    if not problems:
        return "healthy"
    if settings.GATEWAY.models and not get_registry().servable_models():
        return "unhealthy: no model can be served; " + "; ".join(problems)
    return "degraded: " + "; ".join(problems)


@api_view("GET")
def ready(request: HttpRequest) -> HttpResponse:
    # Bounded in time (gateway_project.readiness), so a probe gets its 503 while Postgres is down.
    checks: dict[str, str] = {"database": check_database()}
    checks["models"] = "healthy" if settings.GATEWAY.models else "unhealthy: no models configured"
    checks["providers"] = providers_check()
    # "degraded" (some provider entry lacks its key, other models still work) stays ready: taking the
    # instance out of the load balancer would not bring the key back.
    ok = all(value == "healthy" or value.startswith("degraded") for value in checks.values())
    return JsonResponse({"status": "ready" if ok else "not_ready", "checks": checks}, status=200 if ok else 503)

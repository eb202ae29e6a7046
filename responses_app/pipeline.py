"""The turn pipeline: one create-response turn, whatever transport carried it in.

    the edge (view) validates the body and builds the TurnContext
    start_turn:  route (the caller's model allow-list applies) → admit (rate limits)
                 → load the chain → open the turn (`in_progress` row, when stored; a
                 stream's is written beside the upstream's first answer, in open_stream)
    respond_*:   resilient provider → assembler → settle the turn in place → render

A turn the client has heard of (its id was sent) always exists in storage and always ends
settled: `completed`, `incomplete` (cut short: the client left, the worker shut down, a length or
content limit) or `failed`. A turn whose upstream failed before the client heard anything is
discarded instead, and the client gets an HTTP error status. Nothing here is ever interrupted
from outside: a client hang-up or a shutdown sets the context's cancel token, and the pipeline
notices it where it waits on the upstream (providers/guard.py).
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from django.db import DatabaseError, IntegrityError
from django.utils import timezone

from conversations_app import group_commit
from conversations_app.api_store import api_conversations
from conversations_app.store import Chain, OpenTurn, Settlement, release_connection, store
from conversations_app.usage import rollup as usage_rollup
from gateway_project import concurrency
from gateway_project.api_errors import ApiError, invalid_request
from gateway_project.observability import metrics, metrics_enabled
from responses_app import compaction, worker_lifecycle
from responses_app.assembler import OutputAssembler
from responses_app.cancellation import CANCELLED, CLIENT_GONE, SHUTDOWN, Cancelled, live_turns
from responses_app.connection_cache import ConnectionCache
from responses_app.context import TurnContext
from responses_app.ids import new_id
from responses_app.items import UnknownReference, canonical_items
from responses_app.providers.base import Event, Heartbeat, ProviderError, ProviderRequest
from responses_app.providers.registry import Route, get_registry
from responses_app.response_object import echoed_settings, render_response
from responses_app.schema import CreateResponseRequest
from responses_app.sse import SseEncoder

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

STORAGE_FAILED = {"code": "server_error", "message": "The response could not be stored; retry the request."}


@dataclass
class Turn:
    ctx: TurnContext
    request: CreateResponseRequest
    route: Route
    chain: Chain | None
    input_items: list[dict[str, Any]]
    response_id: str
    created_at: datetime
    settings: dict[str, Any]
    assembler: OutputAssembler = field(default_factory=OutputAssembler)
    conversation_id: str = ""
    opened: bool = False
    # Written `in_progress` (a stream): settled in place. Otherwise written whole when it settles.
    announced: bool = False
    settled: bool = False
    # How it ended: completed | incomplete | failed | cancelled ('' while it runs; failed when discarded).
    final_status: str = ""
    _opening: OpenTurn | None = None
    # A stream's opening write, left to be made beside the upstream's first answer (write_opening_beside).
    _opening_deferred: bool = False
    _opening_failure: BaseException | None = None
    _upstream_request: ProviderRequest | None = None
    # What the upstream is given: the chain and the input, with the gateway's compaction items
    # opened (responses_app.compaction); None: the chain and the input as they are.
    context: list[dict[str, Any]] | None = None
    # A turn in a conversation of the Conversations API: its id, and its items before this turn.
    api_conversation: str = ""
    conversation_items: list[dict[str, Any]] = field(default_factory=list)

    @property
    def history(self) -> list[dict[str, Any]]:
        """What was said before this turn: its chain's items, or its conversation's."""
        return self.chain.items if self.chain is not None else self.conversation_items

    @property
    def steered(self) -> bool:
        """Ended at a boundary to take queued steering input (responses_app.steering)."""
        return self.assembler.finish_reason == "steered"

    @property
    def compacts_automatically(self) -> bool:
        return bool(self.request.context_management)

    def provider_request(self) -> ProviderRequest:
        if self._upstream_request is None:
            self._upstream_request = self._build_provider_request()
        return self._upstream_request

    @property
    def dropped_tools(self) -> list[str]:
        """Hosted tool types the serving provider had no equivalent for and left out."""
        return self._upstream_request.dropped_tools if self._upstream_request is not None else []

    def _build_provider_request(self) -> ProviderRequest:
        req = self.request
        items = self.context
        if items is None:
            items = self.history + self.input_items
        return ProviderRequest(
            model=self.route.upstream_model, items=items, instructions=req.instructions,
            temperature=req.temperature, top_p=req.top_p, max_output_tokens=req.max_output_tokens,
            tools=req.raw_tools, tool_choice=req.raw_tool_choice,
            parallel_tool_calls=req.parallel_tool_calls, text_format=self.settings["text"].get("format"),
            verbosity=self.settings["text"].get("verbosity"), user=req.user, passthrough=req.passthrough,
            stop=req.stop_sequences, reasoning_budget=req.reasoning_budget,
            cancel=self.ctx.cancel, deadline=self.ctx.deadline, heartbeat=self.ctx.heartbeat,
        )

    def render(self, status: str, *, error: dict[str, Any] | None = None,
               completed_at: datetime | None = None) -> dict[str, Any]:
        started = status == "in_progress"
        assembler = self.assembler
        return render_response(
            response_id=self.response_id, created_at=self.created_at, status=status, model=self.request.model,
            instructions=self.request.instructions, settings=self.settings,
            output=[] if started else assembler.output, usage=None if started else _usage(assembler), error=error,
            incomplete_details=assembler.incomplete_details if status == "incomplete" else None,
            completed_at=completed_at,
        )

    # --- storage ---------------------------------------------------------------------------

    def open(self, *, announced: bool, defer: bool = False) -> None:
        """The turn starts. `announced`: its id reaches the client before its end (a stream's
        `response.created`), so with `store` on it is written `in_progress` before that, and an id
        the client has seen always resolves: now, or with `defer` beside the upstream's first answer
        (write_opening_beside). A JSON turn's id is only heard with its result, so it is written
        once, when it settles; here the database is only made sure of, so that an outage fails the
        request before the upstream is paid (a deferred write's upstream call waits for the write's
        connection instead)."""
        live_turns.add(self.ctx.cancel)
        if metrics_enabled():
            metrics.turns_in_flight.inc()
        self.opened = True
        if not self.request.store:
            return
        stored_settings = {k: v for k, v in self.settings.items() if k != "previous_response_id"}
        self._opening = OpenTurn(
            response_id=self.response_id, owner=self.ctx.owner, model=self.request.model,
            provider=self.route.provider.key, created_at=self.created_at, instructions=self.request.instructions,
            settings=stored_settings, input_items=self._stored_input(), worker=worker_lifecycle.lease_id(),
            api_conversation=self.api_conversation,
            subject=self.ctx.identity.subject if self.ctx.identity is not None else "")
        # Beside the upstream only in a gunicorn worker: elsewhere (tests, manage.py) a helper
        # thread would write on a connection of its own, outside the caller's transaction.
        self._opening_deferred = announced and defer and concurrency.gevent_active()
        try:
            if self._opening_deferred:
                pass  # the database is made sure of, and the row written, in write_opening_beside
            elif announced:
                self._write_opening()
            else:
                store.check_available()
        except BaseException:
            self._close()
            raise
        finally:
            release_connection()

    def _write_opening(self) -> None:
        assert self._opening is not None  # noqa: S101 - open() made it
        try:
            self.conversation_id = store.open_turn(self._opening, parent=self._stored_parent)
        except IntegrityError:
            if self._stored_parent is None:
                raise
            # A foreign key broke: the chain it follows was purged since it was read (or since its
            # WebSocket connection kept it).
            raise _previous_not_found(self.request.previous_response_id) from None
        self.announced = True

    def write_opening_beside(self, wait: Callable[[], _T]) -> _T:
        """`wait()` (the wait for the upstream's first answer), with a deferred opening write made
        meanwhile in a helper, so that a stream's time to first byte is not the write's plus the
        upstream's. `wait()` starts only once the write has the connection it is made on (the group
        commit's writer's, conversations_app.group_commit): a database that is down (or a pool that
        stays busy) fails the request before the upstream is paid, as with an inline write. Returns
        once both are done; the write's failure is raised in preference to whatever `wait` raised,
        the turn then ended unannounced and uncounted, as when open() fails (the caller closes the
        upstream it started)."""
        if not self._opening_deferred:
            return wait()
        self._opening_deferred = False
        connected = threading.Event()  # cooperative: this runs only in a gevent-patched worker
        helper = concurrency.start(contextvars.copy_context().run, self._write_opening_in_helper, connected,
                                   name="gateway-opening-write")
        connected.wait()
        if self._opening_failure is not None:  # no connection could be had: the upstream is not asked
            self._opening_written(helper)
        try:
            return wait()
        finally:
            self._opening_written(helper)

    def _opening_written(self, helper: concurrency.Background) -> None:
        """Wait for the helper's write; its failure ends the turn unannounced, and is raised."""
        helper.join()
        if (failure := self._opening_failure) is not None:
            self.settled, self.final_status = True, "failed"
            self._close()
            raise failure

    def _write_opening_in_helper(self, connected: threading.Event) -> None:
        try:
            with group_commit.when_connected(connected.set):
                self._write_opening()
        except BaseException as failure:  # noqa: BLE001 - handed to the request (write_opening_beside)
            self._opening_failure = failure
        finally:
            connected.set()  # after a failure too: the request finds it
            release_connection()

    def settle(self, status: str, *, error: dict[str, Any] | None = None, completed_at: datetime | None = None,
               interrupted: str = "") -> bool:
        """Write how the turn ended. False when the database refused: the write is then kept and
        retried later (worker_lifecycle). A turn whose client is still listening is kept as `failed`,
        since the caller must tell the client it failed; one cut short (the client left, a shutdown)
        keeps its status, which is what its client was told, if anything."""
        if self.settled:
            return True
        self.settled = True
        self.final_status = status
        self._close()
        assembler = self.assembler
        usage = _usage(assembler)
        self.ctx.record_usage(usage)
        self._count(failed=status == "failed", usage=usage)
        if not self.request.store:
            return True
        settlement = Settlement(
            response_id=self.response_id, conversation_id=self.conversation_id, status=status,
            provider=self.route.provider.key, completed_at=completed_at, usage=usage,
            output_items=assembler.output, error=error,
            incomplete_details=assembler.incomplete_details if status == "incomplete" else None,
            cost_usd=_cost(self.route, usage), interrupted=interrupted,
            message_count=len(self.history) + len(self.input_items) + len(assembler.output),
            api_conversation=self.api_conversation,
        )
        write = (partial(store.finish_turn, settlement) if self.announced
                 else partial(store.save_turn, self._opening, settlement, parent=self._stored_parent))
        try:
            written = write()
        except DatabaseError:
            logger.warning("could not store the end of response %s; it will be stored when the database "
                           "answers again", self.response_id, exc_info=True)
            if not interrupted and status != "failed":
                settlement.status, settlement.error, settlement.completed_at = "failed", STORAGE_FAILED, None
            worker_lifecycle.defer(write)
            return False
        finally:
            release_connection()
        if not self.api_conversation:
            self._remember(settlement, conversation_id=written or self.conversation_id)
        return True

    def _remember(self, settlement: Settlement, *, conversation_id: str) -> None:
        """What this turn stored, after its chain's: the context the turn after it starts from
        (conversations_app.chain_memory)."""
        if self._opening is None:
            return
        parent = self._stored_parent
        added = self._opening.input_items + settlement.output_items
        store.remember_chain(
            Chain(self.response_id, conversation_id, parent.depth + 1 if parent is not None else 0,
                  (parent.items if parent is not None else []) + added),
            self.ctx.owner, parent=parent, added=added)

    def _count(self, *, failed: bool, usage: dict[str, int] | None) -> None:
        """The turn in the usage rollup (conversations_app.usage), stored or not."""
        identity = self.ctx.identity
        try:
            usage_rollup.record(model=self.request.model, provider=self.route.provider.key, owner=self.ctx.owner,
                                subject=identity.subject if identity is not None else "", failed=failed,
                                usage=usage, cost_usd=_cost(self.route, usage))
        finally:
            release_connection()

    @property
    def _stored_parent(self) -> Chain | None:
        """The stored response this one follows; None for a chain's first, and for one that follows
        an unstored response of its WebSocket connection (responses_app.connection_cache)."""
        return self.chain if self.chain is not None and self.chain.conversation_id else None

    def _stored_input(self) -> list[dict[str, Any]]:
        # After an unstored predecessor, the stored turn starts a chain of its own and holds the
        # whole context it was given, so it can be continued over HTTP like any stored response.
        if self.chain is not None and not self.chain.conversation_id:
            return self.chain.items + self.input_items
        return self.input_items

    def context_after(self) -> Chain:
        """Everything said up to the end of this turn, as a WebSocket connection keeps it."""
        history = self.history
        return Chain(self.response_id, self.conversation_id if self.request.store else "",
                     (self.chain.depth + 1) if self.chain else 0,
                     history + self.input_items + self.assembler.output)

    def discard(self) -> None:
        """The upstream failed before the client heard of this turn: remove it if it was written
        (the client gets an error status)."""
        if self.settled:
            return
        self.settled = True
        self.final_status = "failed"
        self._close()
        self._count(failed=True, usage=None)
        if not self.announced:
            return
        try:
            store.discard_turn(self.response_id, self.conversation_id,
                               new_conversation=self._stored_parent is None,
                               api_conversation=bool(self.api_conversation))
        except DatabaseError:
            logger.warning("could not discard response %s", self.response_id, exc_info=True)
            worker_lifecycle.defer(partial(store.finish_turn, Settlement(
                response_id=self.response_id, conversation_id=self.conversation_id, status="failed",
                provider=self.route.provider.key, completed_at=None, usage=None, output_items=[],
                error=STORAGE_FAILED)))
        finally:
            release_connection()

    def _close(self) -> None:
        if self.opened:
            self.opened = False
            live_turns.discard(self.ctx.cancel)
            if metrics_enabled():
                metrics.turns_in_flight.dec()


def _usage(assembler: OutputAssembler) -> dict[str, int] | None:
    return assembler.usage.as_dict() if assembler.usage else None


def _cost(route: Route, usage: dict[str, int] | None) -> float | None:
    """At the prices of the model that answered: a fallback's, when one took over."""
    if usage is None:
        return None
    return route.provider.serving.model.cost_usd(usage.get("input_tokens", 0), usage.get("output_tokens", 0))


# --- start ------------------------------------------------------------------------------------

def load_chain(previous_response_id: str | None, owner: str,
               connection_cache: ConnectionCache | None = None) -> Chain | None:
    """The chain that `previous_response_id` names (None without one): its WebSocket connection's
    memory of it (responses_app.connection_cache), or else the caller's own stored chain; the
    documented 400s for one that does not exist (or is another owner's) or is still running."""
    if not previous_response_id:
        return None
    chain = connection_cache.get(previous_response_id) if connection_cache is not None else None
    if chain is None:
        try:
            chain = store.get_chain(previous_response_id, owner)
        finally:
            release_connection()
    if chain is None:
        raise _previous_not_found(previous_response_id)
    if chain.in_progress:
        raise invalid_request(f"Previous response with id '{previous_response_id}' is still in "
                              "progress; wait for it to finish.", param="previous_response_id",
                              code="previous_response_in_progress")
    return chain


def _previous_not_found(previous_response_id: str | None) -> ApiError:
    return invalid_request(f"Previous response with id '{previous_response_id}' not found.",
                           param="previous_response_id", code="previous_response_not_found")


def load_conversation(conversation_id: str | None, owner: str) -> list[dict[str, Any]] | None:
    """The items of the caller's own API conversation (None without one); 404 for one that does not
    exist, is deleted, or is another owner's."""
    if not conversation_id:
        return None
    try:
        items = api_conversations.items(conversation_id, owner)
    finally:
        release_connection()
    if items is None:
        raise ApiError(404, f"Conversation with id '{conversation_id}' not found.", param="conversation",
                       code="not_found")
    return items


def request_items(request: CreateResponseRequest, earlier: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The request's input items as stored (responses_app.items), references resolved."""
    try:
        return canonical_items(request.input_items, earlier)
    except UnknownReference as unknown:
        raise invalid_request(f"Item with id '{unknown.item_id}' not found.", param=f"input[{unknown.index}]",
                              code="item_not_found") from None


def start_turn(ctx: TurnContext, request: CreateResponseRequest, *, body_bytes: int) -> Turn:
    """Everything before the upstream call. Raises ApiError (nothing stored, nothing spent) when the
    turn cannot start."""
    route = get_registry(ctx.config).route(request.model, ctx.may_use)
    ctx.admit(body_bytes=body_bytes, max_output_tokens=request.max_output_tokens)
    chain = load_chain(request.previous_response_id, ctx.owner, ctx.connection_cache)
    conversation_items = load_conversation(request.conversation_id, ctx.owner)
    if request.unknown_parameters:
        logger.debug("parameters the gateway does not know, passed on to Responses-native upstreams only: %s",
                     ", ".join(request.unknown_parameters))
    history = chain.items if chain else conversation_items or []
    input_items = request_items(request, history)
    native = compaction.native(route)
    context = compaction.open_context(history + input_items, owner=ctx.owner, first_input=len(history),
                                      native=native)
    # `context_management`: a Responses-native upstream is given it and compacts itself; for any other
    # the gateway compacts first when the context has reached the threshold.
    if (request.compact_threshold is not None and not native
            and compaction.estimate_tokens(context, request.instructions, request.raw_tools)
            >= request.compact_threshold):
        route = Route(route.model, compaction.CompactFirst(route.provider, history + input_items, ctx.owner))
    turn = Turn(ctx=ctx, request=request, route=route, chain=chain, api_conversation=request.conversation_id or "",
                conversation_items=conversation_items or [],
                input_items=input_items, response_id=new_id("resp"),
                created_at=timezone.now(), settings=echoed_settings(request), context=context)
    if ctx.cancel.cancelled:
        raise _client_gone()  # gone before anything was written or spent: nothing to keep
    # A stream's or a background turn's id reaches the client before the turn ends. A stream (not
    # a background one) is written beside the upstream's first answer: open_stream.
    turn.open(announced=request.stream or bool(request.background),
              defer=request.stream and not request.background)
    return turn


def api_error(error: ProviderError) -> ApiError:
    if error.kind == "bad_request":
        return ApiError(400, error.message, code="upstream_bad_request")
    if error.kind == "rate_limited":
        return ApiError(429, error.message, type="requests", code="rate_limit_exceeded",
                        headers={"Retry-After": str(max(1, round(error.retry_after or 1)))})
    return ApiError(error.status, error.message, type="server_error",
                    code="upstream_timeout" if error.kind == "timeout" else "upstream_error")


@contextmanager
def upstream_errors(what: str) -> Iterator[None]:
    """For one upstream call outside a turn (a count, a compaction): its failure as create would
    answer the same failure, and a client gone meanwhile as 499."""
    try:
        yield
    except ProviderError as error:
        raise api_error(error) from None
    except Cancelled:
        raise ApiError(499, f"The client closed the connection before {what} was ready.",
                       code="client_closed") from None


def _error_object(error: ProviderError) -> dict[str, str]:
    code = "rate_limit_exceeded" if error.kind == "rate_limited" else "server_error"
    return {"code": code, "message": error.message}


def _client_gone() -> ApiError:
    # Nobody reads this answer; 499 (nginx's "client closed request") keeps it out of 5xx error rates.
    return ApiError(499, "The client closed the connection before the response was ready.", code="client_closed")


def _truncated(turn: Turn) -> ProviderError:
    return ProviderError("upstream", f"Provider {turn.route.provider.key!r} ended its answer before it was complete.")


# --- JSON -------------------------------------------------------------------------------------

def respond_json(turn: Turn) -> dict[str, Any]:
    assembler = turn.assembler
    try:
        for event in turn.route.provider.generate(turn.provider_request()):
            assembler.feed(event)
        if assembler.finish_reason is None:
            raise _truncated(turn)
    except ProviderError as error:
        turn.discard()
        raise api_error(error) from None
    except Cancelled as stop:
        assembler.abandon()
        turn.settle("incomplete", interrupted=stop.reason)
        raise _client_gone() from None
    except BaseException:
        turn.discard()
        raise
    assembler.finish()
    status = assembler.status
    completed_at = timezone.now() if status == "completed" else None
    if not turn.settle(status, completed_at=completed_at):
        raise ApiError(503, "The response could not be stored; retry the request.", type="server_error",
                       code="database_unavailable", headers={"Retry-After": "2"})
    return turn.render(status, completed_at=completed_at)


# --- SSE --------------------------------------------------------------------------------------

# The events one step of the stream has in hand at once, in order: None where a keep-alive belongs.
Batch = list[dict[str, Any] | None]


def open_stream(turn: Turn, steer: Callable[[], bool] | None = None) -> Iterator[Batch]:
    """Wait for the upstream's first event (or its first heartbeat) so that a failure before it is
    still an error status (retries and fallbacks happen there), while the turn's `in_progress` row
    is written beside it (Turn.write_opening_beside), then return the stream's batches of events
    (turn_events), the first of which announces the turn. `steer` (WebSocket mode) is asked at each
    safe output boundary whether to end the response there for steering (responses_app.steering)."""
    events = turn.route.provider.stream(turn.provider_request())
    try:
        first = turn.write_opening_beside(lambda: next(events, None))
    except ProviderError as error:
        events.close()  # type: ignore[attr-defined]
        turn.discard()
        raise api_error(error) from None
    except Cancelled as stop:
        events.close()  # type: ignore[attr-defined]
        turn.settle("incomplete", interrupted=stop.reason)
        raise _client_gone() from None
    except BaseException:
        events.close()  # type: ignore[attr-defined]
        turn.discard()
        raise
    return turn_events(turn, first, events, steer)


def sse_frames(turn: Turn) -> Callable[[dict[str, Any] | None], list[str]]:
    """The Responses API's stream renderer (responses_app.http_turns): each event as its SSE frame."""
    sse = SseEncoder()

    def render(event: dict[str, Any] | None) -> list[str]:
        return [sse.comment("keep-alive") if event is None else sse.frame(event)]
    return render


def turn_events(turn: Turn, first: Event | None, events: Iterator[Event],
                steer: Callable[[], bool] | None = None) -> Iterator[Batch]:
    """The stream's events, from `response.created` to the terminal one, settling the turn before
    the terminal event; None where a keep-alive belongs (the upstream is silent).

    They come in batches: a batch holds the events produced without waiting on the upstream in
    between (`response.created`, `response.in_progress` and the first upstream event's; then each
    upstream event's; then the end: the last items' `.done` events and the terminal one), and is
    yielded before the next wait, so a consumer may write a batch at once (one socket write)
    without ever holding an event back while the upstream is slow. No batch is empty."""
    assembler = turn.assembler
    batch: Batch = [{"type": "response.created", "response": turn.render("in_progress")},
                    {"type": "response.in_progress", "response": turn.render("in_progress")}]
    try:
        try:
            for event in _chain([first] if first is not None else [], events):
                if isinstance(event, Heartbeat):
                    batch.append(None)
                elif steer is not None and assembler.at_boundary(event) and steer():
                    break  # steered: the upstream is closed below, the answer ends here
                else:
                    batch.extend(assembler.feed(event))
                if batch:  # all of it before the next wait on the upstream
                    yield batch
                    batch = []
            else:
                if assembler.finish_reason is None:
                    raise _truncated(turn)
            if assembler.finish_reason is None:  # steered
                events.close()  # type: ignore[attr-defined]
                batch.extend(assembler.end_steered())
        except ProviderError as error:
            logger.warning("upstream failed mid-stream: %s", error.message)
            assembler.abandon()
            error_object = _error_object(error)
            turn.settle("failed", error=error_object)
            yield [*batch, {"type": "response.failed", "response": turn.render("failed", error=error_object)}]
            return
        except Cancelled as stop:
            assembler.abandon()
            if stop.reason == CANCELLED:  # POST /v1/responses/{id}/cancel: no event type says so
                turn.settle("cancelled", interrupted=stop.reason)
            else:
                turn.settle("incomplete", interrupted=stop.reason)
                if stop.reason == SHUTDOWN:  # the client is still there: tell it the stream ends here
                    batch.append({"type": "response.incomplete", "response": turn.render("incomplete")})
            if batch:
                yield batch
            return
        batch.extend(assembler.finish())
        status = assembler.status
        completed_at = timezone.now() if status == "completed" else None
        if not turn.settle(status, completed_at=completed_at):
            # Never claim `completed` for a turn a follow-up could not build on: say it failed.
            yield [*batch, {"type": "response.failed", "response": turn.render("failed", error=STORAGE_FAILED)}]
            return
        terminal = "response.completed" if status == "completed" else "response.incomplete"
        yield [*batch, {"type": terminal, "response": turn.render(status, completed_at=completed_at)}]
    finally:
        # The server stopped reading this generator early (the client is gone, GeneratorExit), or
        # something failed: drop the upstream now and keep what was said as an incomplete turn.
        if not turn.settled:
            turn.ctx.cancel.cancel(CLIENT_GONE)
        events.close()  # type: ignore[attr-defined]
        if not turn.settled:
            assembler.abandon()
            turn.settle("incomplete", interrupted=turn.ctx.cancel.reason or CLIENT_GONE)


def _chain(first: list[Event], rest: Iterator[Event]) -> Iterator[Event]:
    yield from first
    yield from rest

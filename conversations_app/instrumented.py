"""`InstrumentedStore`: metrics and spans around every conversation-store operation.

Wraps `ConversationStore` (the only code that touches conversation models), so every read and
write is counted and timed in one place: `conversation_operations_total{operation,backend,status}`
and `conversation_operation_duration_seconds`. Loading a chain is the `conversation.get` span and
opening a turn the `conversation.create` span, as the seed's trace hierarchy shows; settling it
is `conversation.update`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, TypeVar

from opentelemetry.trace import Span

from gateway_project.observability import metrics, metrics_enabled, tracing, tracing_enabled

T = TypeVar("T")


class InstrumentedStore:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _observe(self, operation: str, call: Callable[[], T], *, span_name: str | None = None,
                 attributes: dict[str, Any] | None = None, describe: Callable[[T, Span], None] | None = None) -> T:
        backend = self.inner.backend
        started = time.perf_counter()
        status = "success"
        span_cm: Any = nullcontext(None)
        if span_name and tracing_enabled() and tracing.unsampled_parent() is None:
            # The span records the exception and sets the error status itself.
            span_cm = tracing.tracer().start_as_current_span(
                span_name, attributes={"conversation.backend": backend, "db.system": backend, **(attributes or {})},
                record_exception=True, set_status_on_exception=True)
        try:
            with span_cm as span:
                result = call()
                if result is None:
                    status = "not_found"
                if span is not None and describe is not None and span.is_recording():
                    describe(result, span)
                return result
        except BaseException:
            status = "error"
            raise
        finally:
            if metrics_enabled():
                metrics.conversation_operations_total.labels(operation, backend, status).inc()
                metrics.conversation_operation_duration_seconds.labels(operation, backend).observe(
                    time.perf_counter() - started)

    def get_chain(self, response_id: str, owner: str) -> Any:
        def describe(chain: Any, span: Span) -> None:
            if chain is not None:
                tracing.set_attributes(span, {"conversation.id": chain.conversation_id,
                                              "conversation.message_count": len(chain.items)})

        return self._observe("get", lambda: self.inner.get_chain(response_id, owner), span_name="conversation.get",
                             attributes={"previous_response_id": response_id}, describe=describe)

    def open_turn(self, turn: Any, parent: Any) -> str:
        attributes = {"conversation.model": turn.model, "conversation.id": parent.conversation_id if parent else None,
                      "conversation.message_count": (len(parent.items) if parent else 0) + len(turn.input_items),
                      "response.id": turn.response_id}

        def describe(conversation_id: str, span: Span) -> None:
            span.set_attribute("conversation.id", conversation_id)

        return self._observe("create", lambda: self.inner.open_turn(turn, parent), span_name="conversation.create",
                             attributes={k: v for k, v in attributes.items() if v is not None}, describe=describe)

    def save_turn(self, turn: Any, settlement: Any, parent: Any) -> str:
        attributes = {"conversation.model": turn.model, "conversation.id": parent.conversation_id if parent else None,
                      "conversation.message_count": settlement.message_count, "response.id": turn.response_id,
                      "response.status": settlement.status}

        def describe(conversation_id: str, span: Span) -> None:
            span.set_attribute("conversation.id", conversation_id)

        return self._observe("create", lambda: self.inner.save_turn(turn, settlement, parent),
                             span_name="conversation.create",
                             attributes={k: v for k, v in attributes.items() if v is not None}, describe=describe)

    def finish_turn(self, settlement: Any) -> None:
        self._observe("update", lambda: self.inner.finish_turn(settlement) or True, span_name="conversation.update",
                      attributes={"conversation.id": settlement.conversation_id, "response.id": settlement.response_id,
                                  "response.status": settlement.status,
                                  "conversation.message_count": settlement.message_count})

    def discard_turn(self, response_id: str, conversation_id: str, **kwargs: Any) -> None:
        self._observe("discard", lambda: self.inner.discard_turn(response_id, conversation_id, **kwargs) or True)

    def settle_abandoned(self, workers: list[str], reason: str) -> int:
        return self._observe("settle", lambda: self.inner.settle_abandoned(workers, reason))

    def settle_expired(self, started_before: Any) -> int:
        return self._observe("settle", lambda: self.inner.settle_expired(started_before))

    def renew_lease(self, lease_id: str, host: str, pid: int) -> None:
        self._observe("lease", lambda: self.inner.renew_lease(lease_id, host, pid) or True)

    def leases(self) -> Any:
        return self._observe("lease", self.inner.leases)

    def drop_leases(self, lease_ids: list[str]) -> None:
        self._observe("lease", lambda: self.inner.drop_leases(lease_ids) or True)

    def get_response(self, response_id: str, owner: str) -> Any:
        return self._observe("get_response", lambda: self.inner.get_response(response_id, owner))

    def response_status(self, response_id: str, owner: str) -> str | None:
        return self._observe("get_status", lambda: self.inner.response_status(response_id, owner))

    def delete_response(self, response_id: str, owner: str) -> bool:
        return self._observe("delete", lambda: self.inner.delete_response(response_id, owner) or None) or False

    def list_input_items(self, response_id: str, owner: str, **kwargs: Any) -> Any:
        return self._observe("list_input_items", lambda: self.inner.list_input_items(response_id, owner, **kwargs))

    def purge_idle(self, idle_seconds: float, **kwargs: Any) -> int:
        return self._observe("purge", lambda: self.inner.purge_idle(idle_seconds, **kwargs))


class InstrumentedApiStore(InstrumentedStore):
    """The same metrics and spans around the Conversations API's store (conversations_app.api_store):
    reads are `conversation.get` spans, writes `conversation.create` / `conversation.update`."""

    def create_conversation(self, owner: str, metadata: Any, items: list[Any]) -> Any:
        return self._observe("create", lambda: self.inner.create_conversation(owner, metadata, items),
                             span_name="conversation.create", attributes={"conversation.message_count": len(items)},
                             describe=lambda conversation, span: span.set_attribute("conversation.id", conversation.id))

    def get_conversation(self, conversation_id: str, owner: str) -> Any:
        return self._observe("get", lambda: self.inner.get_conversation(conversation_id, owner),
                             span_name="conversation.get", attributes={"conversation.id": conversation_id})

    def update_conversation(self, conversation_id: str, owner: str, metadata: Any) -> Any:
        return self._observe("update", lambda: self.inner.update_conversation(conversation_id, owner, metadata),
                             span_name="conversation.update", attributes={"conversation.id": conversation_id})

    def delete_conversation(self, conversation_id: str, owner: str) -> bool:
        return self._observe("delete", lambda: self.inner.delete_conversation(conversation_id, owner) or None,
                             span_name="conversation.update", attributes={"conversation.id": conversation_id}) or False

    def add_items(self, conversation_id: str, owner: str, items: list[Any]) -> Any:
        return self._observe("append", lambda: self.inner.add_items(conversation_id, owner, items),
                             span_name="conversation.update",
                             attributes={"conversation.id": conversation_id, "conversation.message_count": len(items)})

    def items(self, conversation_id: str, owner: str) -> Any:
        def describe(items: list[Any], span: Span) -> None:
            span.set_attribute("conversation.message_count", len(items))

        return self._observe("get", lambda: self.inner.items(conversation_id, owner), span_name="conversation.get",
                             attributes={"conversation.id": conversation_id}, describe=describe)

    def list_items(self, conversation_id: str, owner: str, **kwargs: Any) -> Any:
        return self._observe("list_items", lambda: self.inner.list_items(conversation_id, owner, **kwargs),
                             span_name="conversation.get", attributes={"conversation.id": conversation_id})

    def get_item(self, conversation_id: str, owner: str, item_id: str) -> Any:
        return self._observe("get_item", lambda: self.inner.get_item(conversation_id, owner, item_id),
                             span_name="conversation.get", attributes={"conversation.id": conversation_id})

    def delete_item(self, conversation_id: str, owner: str, item_id: str) -> Any:
        return self._observe("delete_item", lambda: self.inner.delete_item(conversation_id, owner, item_id),
                             span_name="conversation.update", attributes={"conversation.id": conversation_id})

    def purge_deleted(self, **kwargs: Any) -> int:
        return self._observe("purge", lambda: self.inner.purge_deleted(**kwargs))

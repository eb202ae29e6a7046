"""`InstrumentedProvider`: metrics, a span and the "response generated" log line for each upstream call.

The registry wraps every concrete provider instance in one of these, inside the resilience
layer, so each attempt (a retry, a fallback) is measured on its own and providers themselves
contain no observability code. While an upstream call runs its span is current, so the outgoing
request carries a child `traceparent` (responses_app.providers.http.post).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextvars import Token
from typing import Any, TypeVar

from django.conf import settings
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from gateway_project.observability import context, metrics, metrics_enabled, tracing, tracing_enabled
from responses_app.cancellation import Cancelled
from responses_app.providers.base import Compaction, Event, Heartbeat, Provider, ProviderError, ProviderRequest, Usage

logger = logging.getLogger("gateway.provider")
_T = TypeVar("_T")


class _Call:
    """What one upstream call observed, reported once when it ends."""

    def __init__(self, provider: Provider, request: ProviderRequest, operation: str) -> None:
        self.provider = provider
        self.model = request.model
        self.operation = operation
        self.started = time.perf_counter()
        self.ttfb: float | None = None
        self.chunks = 0
        self.usage: Usage | None = None
        self.span: Span = trace.INVALID_SPAN
        if tracing_enabled():
            # Under an unsampled span the call carries on under it (not recording, so never ended
            # here; its context still goes upstream) instead of starting a child the sampler drops.
            self.span = tracing.unsampled_parent() or tracing.tracer().start_span(
                f"provider.{operation}", kind=SpanKind.CLIENT, attributes={
                    "provider.name": provider.key, "provider.model": request.model,
                    "gen_ai.system": _GEN_AI_SYSTEM.get(provider.type, provider.type),
                    "gen_ai.operation.name": "chat", "gen_ai.request.model": request.model,
                })

    def current(self) -> Token[Context]:
        """Make this call's span current while upstream code runs (for the outgoing traceparent)."""
        return otel_context.attach(trace.set_span_in_context(self.span))

    def see(self, event: Event) -> None:
        if self.ttfb is None:
            self.ttfb = time.perf_counter() - self.started
        self.chunks += 1
        if isinstance(event, Usage):
            self.usage = event

    def finish(self, status: str, error: BaseException | None = None) -> None:
        elapsed = time.perf_counter() - self.started
        key, model, op = self.provider.key, self.model, self.operation
        tokens_in = self.usage.input_tokens if self.usage else 0
        tokens_out = self.usage.output_tokens if self.usage else 0
        cost = _cost(key, model, tokens_in, tokens_out) if self.usage else None
        if metrics_enabled():
            metrics.provider_requests_total.labels(key, model, op, status).inc()
            metrics.provider_request_duration_seconds.labels(key, model, op).observe(elapsed)
            if self.usage:
                metrics.provider_tokens_total.labels(key, model, "input").inc(tokens_in)
                metrics.provider_tokens_total.labels(key, model, "output").inc(tokens_out)
            if cost:
                metrics.provider_cost_usd_total.labels(key, model).inc(cost)
            if op == "generate_stream":
                if self.ttfb is not None:
                    metrics.provider_stream_ttfb_seconds.labels(key, model).observe(self.ttfb)
                metrics.provider_stream_chunks_total.labels(key, model).inc(self.chunks)
                metrics.provider_stream_duration_seconds.labels(key, model).observe(elapsed)
        if self.span.is_recording():
            tracing.set_attributes(self.span, {
                "provider.input_tokens": tokens_in if self.usage else None,
                "provider.output_tokens": tokens_out if self.usage else None,
                "gen_ai.usage.input_tokens": tokens_in if self.usage else None,
                "gen_ai.usage.output_tokens": tokens_out if self.usage else None,
                "gen_ai.response.model": model, "provider.status": status,
            })
            if op == "generate_stream":
                tracing.set_attributes(self.span, {"provider.chunk_count": self.chunks,
                                                   "provider.ttfb_seconds": self.ttfb})
            if error is not None:
                self.span.record_exception(error)
                self.span.set_status(Status(StatusCode.ERROR, str(error)))
            self.span.end()
        if status == "success":
            # Logged under the provider span, so the line links to the call it describes.
            token = self.current()
            try:
                logger.info("response generated", extra={
                    "provider": key, "model": model, "input_tokens": tokens_in, "output_tokens": tokens_out,
                    "operation": op, "duration_ms": round(elapsed * 1000, 1),
                })
            finally:
                otel_context.detach(token)


# The OpenTelemetry GenAI semantic conventions' names for the systems behind our provider types.
_GEN_AI_SYSTEM = {"openai": "openai", "azureopenai": "az.ai.openai", "anthropic": "anthropic",
                  "google": "gcp.gemini", "demo": "demo"}


def _cost(provider: str, upstream_model: str, input_tokens: int, output_tokens: int) -> float | None:
    for entry in settings.GATEWAY.models:
        if entry.provider == provider and entry.upstream_model == upstream_model:
            return entry.cost_usd(input_tokens, output_tokens)
    return None


def _status(error: ProviderError) -> str:
    return error.kind


class InstrumentedProvider(Provider):
    def __init__(self, inner: Provider) -> None:
        super().__init__(inner.key, inner.entry)
        self.inner = inner
        self.type = inner.type

    def __getattr__(self, name: str) -> Any:
        # Anything else a caller needs from the concrete provider (its upstream, url, ...).
        if name == "inner":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def generate(self, request: ProviderRequest) -> Iterator[Event]:
        # A non-streamed answer is one upstream round trip: take all of it inside the span.
        events = self._measured(request, "generate", lambda: list(self.inner.generate(request)), lambda seen: seen)
        return iter(events)

    def compact(self, request: ProviderRequest) -> Compaction:
        """Counted, timed and traced as operation `compact` (`provider.compact`), with the pass's usage."""
        return self._measured(request, "compact", lambda: self.inner.compact(request),
                              lambda result: [result.usage] if result.usage is not None else [])

    def _measured(self, request: ProviderRequest, operation: str, run: Callable[[], _T],
                  events_of: Callable[[_T], list[Event]]) -> _T:
        """One upstream round trip, whole, inside its span."""
        call = _Call(self.inner, request, operation)
        token = call.current()
        try:
            result = run()
            for event in events_of(result):
                call.see(event)
        except ProviderError as error:
            call.finish(_status(error), error)
            raise
        except Cancelled:
            call.finish("cancelled")
            raise
        except BaseException as error:
            call.finish("error", error)
            raise
        finally:
            otel_context.detach(token)
            context.add_upstream_time(time.perf_counter() - call.started)
        call.finish("success")
        return result

    def stream(self, request: ProviderRequest) -> Iterator[Event]:
        return self._stream(request)

    def _stream(self, request: ProviderRequest) -> Iterator[Event]:
        call = _Call(self.inner, request, "generate_stream")
        events = self.inner.stream(request)
        status = "cancelled"
        failure: BaseException | None = None
        try:
            while True:
                # Time and span only the wait on the upstream, not the caller's work between events.
                waited = time.perf_counter()
                token = call.current()
                try:
                    event = next(events)
                except StopIteration:
                    status = "success"
                    return
                finally:
                    otel_context.detach(token)
                    context.add_upstream_time(time.perf_counter() - waited)
                if not isinstance(event, Heartbeat):  # the guard's keep-alive, not upstream data
                    call.see(event)
                yield event
        except ProviderError as error:
            status, failure = _status(error), error
            raise
        except (GeneratorExit, Cancelled):
            # The client went away or the worker is stopping: not the provider's failure.
            raise
        except BaseException as error:
            status, failure = "error", error
            raise
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()
            call.finish(status, failure)

    def count_input_tokens(self, request: ProviderRequest) -> int:
        """Counted and timed as operation `count_tokens`, under a `provider.count_tokens` span (no
        "response generated" line: nothing was generated)."""
        key, model = self.key, request.model
        started = time.perf_counter()
        span: Span = trace.INVALID_SPAN
        if tracing_enabled():
            span = tracing.tracer().start_span("provider.count_tokens", kind=SpanKind.CLIENT, attributes={
                "provider.name": key, "provider.model": model, "gen_ai.request.model": model,
                "gen_ai.system": _GEN_AI_SYSTEM.get(self.type, self.type),
            })
        token = otel_context.attach(trace.set_span_in_context(span))
        status = "error"
        try:
            count = self.inner.count_input_tokens(request)
            status = "success"
            span.set_attribute("provider.input_tokens", count)
            return count
        except ProviderError as error:
            status = _status(error)
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, str(error)))
            raise
        except Cancelled:
            status = "cancelled"
            raise
        finally:
            otel_context.detach(token)
            elapsed = time.perf_counter() - started
            context.add_upstream_time(elapsed)
            if metrics_enabled():
                metrics.provider_requests_total.labels(key, model, "count_tokens", status).inc()
                metrics.provider_request_duration_seconds.labels(key, model, "count_tokens").observe(elapsed)
            span.set_attribute("provider.status", status)
            span.end()

    def close(self) -> None:
        self.inner.close()

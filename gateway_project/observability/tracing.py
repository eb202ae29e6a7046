"""OpenTelemetry tracing: the tracer provider, its sampler and exporter, built from `observability.tracing`.

The provider is started once per process by `ensure_started()`, which the tracing middleware
calls when Django loads it. Under gunicorn that is inside each worker, after the fork and after
gevent has patched the standard library, so the batch processor's thread is a greenlet and the
exporters' sockets are cooperative; gRPC additionally needs its gevent integration. Spans are
exported in the background: a slow or unreachable collector costs dropped spans and one error
line, never request latency. `shutdown()` (gunicorn's worker_exit) flushes what is queued.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler, TraceIdRatioBased

from gateway_project.config import ExporterConfig, SamplerConfig, TracingConfig
from gateway_project.observability import context

logger = logging.getLogger(__name__)

TRACER_NAME = "llm-gateway"
# A collector that does not answer within this is treated as down for that batch.
EXPORT_TIMEOUT_SECONDS = 5.0

_lock = threading.Lock()
_started_in_pid: int | None = None
_provider: TracerProvider | None = None


_tracer: tuple[trace.TracerProvider, trace.Tracer] | None = None


def tracer() -> trace.Tracer:
    """The gateway's tracer from the current provider. Asked of the provider once per provider,
    not per span: `get_tracer` builds a new tracer and scope each time (about 2 % of a small
    request's CPU, issue 13). Before the provider is set this is OpenTelemetry's proxy, which
    follows the provider once one is."""
    global _tracer
    provider = trace.get_tracer_provider()
    cached = _tracer
    if cached is None or cached[0] is not provider:
        cached = _tracer = (provider, trace.get_tracer(TRACER_NAME, tracer_provider=provider))
    return cached[1]


def build_sampler(config: SamplerConfig) -> Sampler:
    """Parent-based, so a caller's sampled `traceparent` is honoured and its trace stays whole."""
    root: Sampler
    if config.type == "always":
        root = ALWAYS_ON
    elif config.type == "never":
        root = ALWAYS_OFF
    else:
        root = TraceIdRatioBased(config.rate)
    return ParentBased(root)


def _http_url(endpoint: str, insecure: bool) -> str:
    """The seed writes endpoints as `host:port`; OTLP/HTTP wants a URL ending in /v1/traces."""
    url = endpoint if "://" in endpoint else f"{'http' if insecure else 'https'}://{endpoint}"
    scheme, _, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme}://{host}/{path}" if slash and path else f"{scheme}://{host}/v1/traces"


def _uses_gevent() -> bool:
    try:
        from gevent import monkey
    except ImportError:
        return False
    return bool(monkey.is_module_patched("socket"))


def build_exporter(config: ExporterConfig) -> SpanExporter:
    if config.type == "stdout":
        # One span per line, like the JSON log lines around it.
        return ConsoleSpanExporter(out=sys.stdout, formatter=lambda span: span.to_json(indent=None) + "\n")
    if config.protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter(endpoint=_http_url(config.endpoint, config.insecure), headers=dict(config.headers),
                            timeout=EXPORT_TIMEOUT_SECONDS)
    if _uses_gevent():
        # gRPC's core runs its own polling threads, which would block a gevent hub; this makes
        # it cooperate. It must run before the first channel is created in this process.
        import grpc.experimental.gevent as grpc_gevent

        grpc_gevent.init_gevent()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

    endpoint = config.endpoint.split("://", 1)[-1]
    return GrpcExporter(endpoint=endpoint, insecure=config.insecure, headers=dict(config.headers),
                        timeout=EXPORT_TIMEOUT_SECONDS)


class ReportingExporter(SpanExporter):
    """Log one clear error when the collector stops accepting spans, and one line when it recovers.

    The OTLP exporters' own per-batch logging is silenced in the LOGGING setting; without this
    an unreachable collector would fill the log with a line per batch.
    """

    def __init__(self, inner: SpanExporter, where: str) -> None:
        self.inner = inner
        self.where = where
        self.failing = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:  # noqa: BLE001 - an exporter bug must not kill the export thread
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.FAILURE and not self.failing:
            self.failing = True
            logger.error("tracing: cannot export spans to %s; spans are being dropped until it accepts them "
                         "again (check observability.tracing.exporter)", self.where)
        elif result is SpanExportResult.SUCCESS and self.failing:
            self.failing = False
            logger.warning("tracing: exporting spans to %s again", self.where)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class RequestIdSpanProcessor(SpanProcessor):
    """Put the request id on every span of a request, not only the server span."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        scope = context.current.get()
        if scope is not None:
            span.set_attribute("http.request_id", scope.request_id)


def describe(config: ExporterConfig) -> str:
    if config.type == "stdout":
        return "stdout"
    return f"the OTLP collector at {config.endpoint} ({config.protocol})"


def build_provider(config: TracingConfig, exporter: SpanExporter | None = None) -> TracerProvider:
    provider = TracerProvider(sampler=build_sampler(config.sampler),
                              resource=Resource.create({"service.name": config.service_name}))
    exporter = exporter or ReportingExporter(build_exporter(config.exporter), describe(config.exporter))
    provider.add_span_processor(RequestIdSpanProcessor())
    # Small batches: under gevent, encoding a batch holds the worker's event loop, so many small
    # pauses are better for request latency than one long one.
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=64,
                                                   export_timeout_millis=EXPORT_TIMEOUT_SECONDS * 1000))
    return provider


def install(provider: TracerProvider) -> None:
    """Make `provider` this process's tracer provider (tests install one with an in-memory exporter)."""
    global _provider, _started_in_pid
    with _lock:
        trace.set_tracer_provider(provider)
        _provider, _started_in_pid = provider, os.getpid()


def ensure_started(config: TracingConfig) -> None:
    """Start tracing in this process once; a forked child starts its own."""
    global _provider, _started_in_pid
    with _lock:
        if _started_in_pid == os.getpid():
            return
        try:
            provider = build_provider(config)
        except Exception:
            logger.exception("tracing: could not start the exporter; requests are served without traces")
            _started_in_pid = os.getpid()
            return
        trace.set_tracer_provider(provider)
        _provider, _started_in_pid = provider, os.getpid()


def shutdown() -> None:
    """Flush queued spans and stop exporting (graceful worker exit)."""
    global _provider
    with _lock:
        provider, _provider = _provider, None
    if provider is not None:
        provider.shutdown()


def unsampled_parent() -> trace.Span | None:
    """The current span when it belongs to a trace that is not sampled, else None.

    The sampler is parent-based, so every child of such a span would be dropped: callers skip
    creating one (about 2 % of a small request's CPU for three spans, issue 13) and carry on under
    this span, whose context still goes upstream in `traceparent` (sampled flag off) and into
    log lines. A root (no current span) is created as before: the sampler decides it."""
    span = trace.get_current_span()
    context = span.get_span_context()
    return span if context.is_valid and not context.trace_flags.sampled else None


def set_attributes(span: trace.Span, attributes: dict[str, Any]) -> None:
    if span.is_recording():
        span.set_attributes({k: v for k, v in attributes.items() if v is not None})

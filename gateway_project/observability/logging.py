"""Log lines that correlate: every record carries the request id and the trace/span ids.

`logging.format: json` writes one JSON object per line on stdout with `time`, `level`, `msg`,
`logger`, `request_id`, `trace_id`, `span_id` and any fields passed with `extra=`, e.g. the
"response generated" line's provider, model and token counts. `text` writes the same fields as
`key=value` pairs after the message, for humans at a terminal.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

from gateway_project import fast_json
from gateway_project.observability import context

# Attributes every LogRecord has; anything else on a record came from `extra=` and is a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
_CORRELATION = ("request_id", "trace_id", "span_id")


class CorrelationFilter(logging.Filter):
    """Stamp request and trace ids on each record (unless the caller passed them explicitly)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            scope = context.current.get()
            record.request_id = scope.request_id if scope else None
        if not hasattr(record, "trace_id"):
            span_context = trace.get_current_span().get_span_context()
            # Only sampled traces exist in the tracing backend; an id that leads nowhere is noise.
            sampled = span_context.is_valid and span_context.trace_flags.sampled
            record.trace_id = format(span_context.trace_id, "032x") if sampled else None
            record.span_id = format(span_context.span_id, "016x") if sampled else None
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and k not in _CORRELATION}


def _time(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"time": _time(record), "level": record.levelname, "msg": record.getMessage(),
                                "logger": record.name}
        for key in _CORRELATION:
            if (value := getattr(record, key, None)) is not None:
                line[key] = value
        line.update(_fields(record))
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return fast_json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [_time(record), record.levelname, record.name, record.getMessage()]
        pairs = {key: getattr(record, key, None) for key in _CORRELATION} | _fields(record)
        parts += [f"{key}={value}" for key, value in pairs.items() if value is not None]
        text = " ".join(str(part) for part in parts)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class ApiRequestsLoggedElsewhere(logging.Filter):
    """Drop django.request's "Bad Request: /v1/responses" lines for API paths: the access log line
    (gateway_project.middleware.logging) already has the status and the error's code, param and
    message, and unexpected exceptions are logged with their traceback by the error middleware.
    Other paths (the admin) keep Django's lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = getattr(record, "request", None)
        path = getattr(request, "path", "") or ""
        return not path.startswith("/v1/")


def logging_config(format_: str, level: str) -> dict[str, Any]:
    """Django's LOGGING setting for the configured format and level."""
    formatter = "gateway_project.observability.logging.JsonFormatter" if format_ == "json" \
        else "gateway_project.observability.logging.TextFormatter"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"correlation": {"()": "gateway_project.observability.logging.CorrelationFilter"},
                    "api_logged_elsewhere": {"()": "gateway_project.observability.logging.ApiRequestsLoggedElsewhere"}},
        "formatters": {"gateway": {"()": formatter}},
        "handlers": {"console": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout",
                                 "formatter": "gateway", "filters": ["correlation"]}},
        "root": {"handlers": ["console"], "level": level},
        # The OTLP exporters log every failed batch; gateway_project.observability.tracing logs one
        # clear line instead.
        "loggers": {
            **{name: {"level": "CRITICAL"} for name in (
                "opentelemetry.exporter.otlp.proto.grpc.exporter",
                "opentelemetry.exporter.otlp.proto.http.trace_exporter",
                "opentelemetry.exporter.otlp.proto.http._common", "opentelemetry.sdk.trace.export",
            )},
            "django.request": {"filters": ["api_logged_elsewhere"]},
        },
    }

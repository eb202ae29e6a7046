"""Outbound HTTP for providers: one pooled `requests.Session` per provider entry, timeouts always set.

Every upstream call goes through `post()`, which turns transport failures into `ProviderError`s
with a kind the gateway maps to a client status (timeouts 504, connection failures 502, ...).

Timeouts come in four (`Timeouts`): connect, first byte (until the status line), idle (the
longest silence between two stream events) and total (the whole answer). `requests` has a single
read timeout, so after the headers arrive the socket's timeout is re-armed before every read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import requests
from opentelemetry import propagate
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError

from responses_app.providers.base import ProviderError

# Under gevent one worker holds many concurrent upstream calls; keep that many sockets warm.
POOL_SIZE = 64


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0
    first_byte: float = 120.0
    idle: float = 120.0
    total: float = 600.0

    @classmethod
    def of(cls, entry: Any) -> Timeouts:
        """From a provider entry of the config (gateway_project.config.ProviderEntry)."""
        return cls(connect=entry.connect_timeout, first_byte=entry.effective_first_byte_timeout,
                   idle=entry.effective_idle_timeout, total=entry.total_timeout)


def new_session() -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=POOL_SIZE, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _retry_after(response: requests.Response) -> float | None:
    # `retry-after-ms` (OpenAI, Azure) is more precise than `Retry-After`'s whole seconds.
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = response.headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            continue
    return None


def error_from_status(provider: str, response: requests.Response) -> ProviderError:
    """Classify an upstream error status. Messages name the provider, never its credentials."""
    status = response.status_code
    detail = upstream_message(response)
    if status in (401, 403):
        return ProviderError("auth", f"Provider {provider!r} rejected the gateway's credentials "
                             f"(upstream status {status}); check its api_key.", upstream_status=status)
    if status == 429:
        return ProviderError("rate_limited", f"Provider {provider!r} is rate limiting requests.",
                             upstream_status=status, retry_after=_retry_after(response))
    if status in (400, 413, 422):
        return ProviderError("bad_request", detail or f"Provider {provider!r} rejected the request.", upstream_status=status)
    if status in (503, 529):
        return ProviderError("unavailable", f"Provider {provider!r} is unavailable (upstream status {status}).",
                             upstream_status=status, retry_after=_retry_after(response))
    return ProviderError("upstream", f"Provider {provider!r} failed (upstream status {status}).", upstream_status=status)


def upstream_message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or "")
    if isinstance(error, str):
        return error
    return ""


def post(
    session: requests.Session,
    provider: str,
    url: str,
    *,
    payload: dict[str, Any],
    headers: dict[str, str],
    timeout: Timeouts,
    stream: bool,
) -> requests.Response:
    started = time.monotonic()
    try:
        # W3C trace context: the upstream sees the provider span as its parent (no-op without tracing).
        headers = {**headers}
        propagate.inject(headers)
        response = session.post(url, json=payload, headers=headers, stream=stream,
                                timeout=(timeout.connect, min(timeout.first_byte, timeout.total)))
    except requests.ConnectTimeout:
        raise ProviderError("timeout", f"Could not connect to provider {provider!r} in time.", retryable=True) from None
    except requests.Timeout:
        raise ProviderError("timeout", f"Provider {provider!r} did not answer in time.") from None
    except requests.RequestException:
        # Refused, reset before the answer, DNS: nothing was generated, so another try is safe.
        raise ProviderError("upstream", f"Could not reach provider {provider!r}.", retryable=True) from None
    if response.status_code >= 400:
        try:
            response.content  # read the error body before closing
        except requests.RequestException:
            pass
        response.close()
        raise error_from_status(provider, response)
    if stream:
        response._gateway_clock = _StreamClock(timeout.idle, started + timeout.total)  # type: ignore[attr-defined]
        response._gateway_clock.arm(provider, response)  # type: ignore[attr-defined]
    return response


class _StreamClock:
    """Re-arms the socket's read timeout before each read: the idle gap, cut short by the total deadline."""

    def __init__(self, idle: float, deadline: float) -> None:
        self.idle = idle
        self.deadline = deadline

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline - 0.01

    def arm(self, provider: str, response: requests.Response) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise ProviderError("timeout", f"Provider {provider!r} exceeded the total time allowed for an answer.")
        connection = getattr(response.raw, "connection", None)
        sock = getattr(connection, "sock", None)
        if sock is not None:
            sock.settimeout(min(self.idle, remaining))


def read_json(provider: str, response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except requests.Timeout:
        raise ProviderError("timeout", f"Provider {provider!r} stalled while answering.") from None
    except ValueError:
        # Before RequestException: requests' JSONDecodeError is both.
        raise ProviderError("upstream", f"Provider {provider!r} sent a body that is not JSON.") from None
    except requests.RequestException as exc:
        if _timed_out(exc):
            raise ProviderError("timeout", f"Provider {provider!r} stalled while answering.") from None
        raise ProviderError("upstream", f"Provider {provider!r} broke off its answer.") from None
    if not isinstance(body, dict):
        raise ProviderError("upstream", f"Provider {provider!r} sent an unexpected body.")
    return body


def sse_events(provider: str, response: requests.Response) -> Iterator[tuple[str | None, str]]:
    """(event name, data) pairs of an SSE body, per the WHATWG rules the providers follow."""
    event: str | None = None
    data: list[str] = []
    clock: _StreamClock | None = getattr(response, "_gateway_clock", None)
    try:
        for raw in response.iter_lines(decode_unicode=False):
            if clock is not None:
                clock.arm(provider, response)
            line = raw.decode("utf-8")
            if line == "":
                if data:
                    yield event, "\n".join(data)
                event, data = None, []
            elif line.startswith(":"):
                continue
            else:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    data.append(value)
                elif name == "event":
                    event = value
        if data:
            yield event, "\n".join(data)
    except (requests.RequestException, UnicodeDecodeError) as exc:
        if _timed_out(exc):
            if clock is not None and clock.expired():
                raise ProviderError("timeout", f"Provider {provider!r} exceeded the total time allowed for an "
                                    "answer.") from None
            raise ProviderError("timeout", f"Provider {provider!r} stalled mid-stream.") from None
        raise ProviderError("upstream", f"Provider {provider!r} broke off the stream.") from None


def _timed_out(exc: BaseException) -> bool:
    """A read timeout, however requests wrapped it (while streaming it arrives as a ConnectionError)."""
    if isinstance(exc, requests.Timeout):
        return True
    return any(isinstance(arg, (ReadTimeoutError, TimeoutError)) for arg in getattr(exc, "args", ()))


def parse_data(provider: str, data: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        raise ProviderError("upstream", f"Provider {provider!r} sent a malformed stream event.") from None
    if not isinstance(value, dict):
        raise ProviderError("upstream", f"Provider {provider!r} sent a malformed stream event.")
    return value

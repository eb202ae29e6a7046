"""Outbound HTTP for providers: one pooled `requests.Session` per provider entry, timeouts always set.

Every upstream call goes through `post()`, which turns transport failures into `ProviderError`s
with a kind the gateway maps to a client status (timeouts 504, connection failures 502, ...).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from responses_app.providers.base import ProviderError

# Under gevent one worker holds many concurrent upstream calls; keep that many sockets warm.
POOL_SIZE = 64


def new_session() -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=POOL_SIZE, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
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
    timeout: tuple[float, float],
    stream: bool,
) -> requests.Response:
    try:
        response = session.post(url, json=payload, headers=headers, timeout=timeout, stream=stream)
    except requests.Timeout:
        raise ProviderError("timeout", f"Provider {provider!r} did not answer in time.") from None
    except requests.RequestException:
        raise ProviderError("upstream", f"Could not reach provider {provider!r}.") from None
    if response.status_code >= 400:
        try:
            response.content  # read the error body before closing
        except requests.RequestException:
            pass
        response.close()
        raise error_from_status(provider, response)
    return response


def read_json(provider: str, response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except requests.Timeout:
        raise ProviderError("timeout", f"Provider {provider!r} stalled while answering.") from None
    except requests.RequestException:
        raise ProviderError("upstream", f"Provider {provider!r} broke off its answer.") from None
    except ValueError:
        raise ProviderError("upstream", f"Provider {provider!r} sent a body that is not JSON.") from None
    if not isinstance(body, dict):
        raise ProviderError("upstream", f"Provider {provider!r} sent an unexpected body.")
    return body


def sse_events(provider: str, response: requests.Response) -> Iterator[tuple[str | None, str]]:
    """(event name, data) pairs of an SSE body, per the WHATWG rules the providers follow."""
    event: str | None = None
    data: list[str] = []
    try:
        for raw in response.iter_lines(decode_unicode=False):
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
    except requests.Timeout:
        raise ProviderError("timeout", f"Provider {provider!r} stalled mid-stream.") from None
    except (requests.RequestException, UnicodeDecodeError):
        raise ProviderError("upstream", f"Provider {provider!r} broke off the stream.") from None


def parse_data(provider: str, data: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        raise ProviderError("upstream", f"Provider {provider!r} sent a malformed stream event.") from None
    if not isinstance(value, dict):
        raise ProviderError("upstream", f"Provider {provider!r} sent a malformed stream event.")
    return value

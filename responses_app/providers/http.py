"""Outbound HTTP for providers: one pooled `requests.Session` per provider entry, timeouts always set.

Every upstream call goes through `post()`, which turns transport failures into `ProviderError`s
with a kind the gateway maps to a client status (timeouts 504, connection failures 502, ...).

The four timeouts (`Timeouts`: connect, first byte, idle gap, total) are enforced by the upstream
guard (providers/guard.py), which watches the clock while the call runs in a helper and, when a
limit passes (or the client leaves), cancels the call's token. The token then shuts the upstream
socket down for reading, which ends a blocked read in any thread or greenlet without touching
what else the process is doing: while waiting for the status line, through the connection class
the session's pools use (`_AbortableConnection`); once the headers are in, through
`HTTPResponse.shutdown()`, urllib3's public way to stop a response's reads. The socket timeouts
given to requests are only a safety net.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import requests
from opentelemetry import propagate
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ReadTimeoutError

from responses_app.cancellation import Cancelled, CancelToken
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

    def socket_read(self, *, stream: bool) -> float:
        """The per-read socket timeout: the longest wait any phase of this call may have (the guard
        enforces the exact limits; this only bounds a helper nobody waits for any more)."""
        longest = max(self.first_byte, self.idle) if stream else self.first_byte
        return min(longest, self.total)


# The cancel token of the upstream call running in this thread or greenlet (set by `post`).
_call_token: contextvars.ContextVar[CancelToken | None] = contextvars.ContextVar("upstream_call_token", default=None)


class _AbortableConnection:
    """Mixed into urllib3's connection classes: while this connection waits for a response's status
    line, cancelling the call's token shuts its socket down, so the wait ends at once."""

    sock: socket.socket | None
    _waiting_for: CancelToken | None = None

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        token = _call_token.get()
        if token is None:
            return super().getresponse(*args, **kwargs)  # type: ignore[misc]
        self._waiting_for = token
        forget = token.on_cancel(lambda _reason: self._abort(token))
        try:
            return super().getresponse(*args, **kwargs)  # type: ignore[misc]
        finally:
            self._waiting_for = None
            forget()

    def _abort(self, token: CancelToken) -> None:
        # Only while still waiting for this call: never a connection back in the pool.
        if self._waiting_for is token and self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)


class _HTTPConnection(_AbortableConnection, HTTPConnection):
    pass


class _HTTPSConnection(_AbortableConnection, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


def new_session(endpoint: str) -> requests.Session:
    """The provider entry's session for calls to `endpoint` (its base URL)."""
    session = requests.Session()
    adapter = _Adapter(pool_connections=1, pool_maxsize=POOL_SIZE, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    _read_environment_once(session, endpoint)
    return session


def _read_environment_once(session: requests.Session, endpoint: str) -> None:
    """The environment's settings for this endpoint (HTTP(S)_PROXY and NO_PROXY, REQUESTS_CA_BUNDLE,
    ~/.netrc), read once. requests reads them again on every call (it parses the proxy variables and
    looks for the netrc file each time), which was about a tenth of an upstream call's CPU; with them
    on the session and `trust_env` off, every call is sent as it was, without the lookups. An
    endpoint's calls all go to its host, which is all that NO_PROXY and netrc depend on."""
    environment = session.merge_environment_settings(endpoint, {}, None, None, None)
    session.proxies = environment["proxies"]
    session.verify = environment["verify"]
    session.auth = requests.utils.get_netrc_auth(endpoint)
    session.trust_env = False


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
    if status in (400, 404, 413, 422):
        # The request's fault (a model the upstream does not have, a context too long): the client
        # hears why, and the provider's health is not in question.
        return ProviderError("bad_request", detail or f"Provider {provider!r} rejected the request.",
                             upstream_status=status)
    if status in (503, 529):
        return ProviderError("unavailable", f"Provider {provider!r} is unavailable (upstream status {status}).",
                             upstream_status=status, retry_after=_retry_after(response))
    return ProviderError("upstream", f"Provider {provider!r} failed (upstream status {status}).",
                         upstream_status=status)


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
    cancel: CancelToken | None = None,
) -> requests.Response:
    if cancel is not None:
        cancel.raise_if_cancelled()
    try:
        # W3C trace context: the upstream sees the provider span as its parent (no-op without tracing).
        headers = {**headers}
        propagate.inject(headers)
        reset = _call_token.set(cancel)
        try:
            response = session.post(url, json=payload, headers=headers, stream=stream,
                                    timeout=(timeout.connect, timeout.socket_read(stream=stream)))
        finally:
            _call_token.reset(reset)
    except requests.ConnectTimeout:
        raise ProviderError("timeout", f"Could not connect to provider {provider!r} in time.", retryable=True) from None
    except requests.Timeout:
        raise ProviderError("timeout", f"Provider {provider!r} did not answer in time.") from None
    except requests.RequestException:
        # Refused, reset before the answer, DNS: nothing was generated, so another try is safe.
        raise ProviderError("upstream", f"Could not reach provider {provider!r}.", retryable=True) from None
    if response.status_code >= 400:
        with contextlib.suppress(requests.RequestException):
            _ = response.content  # read the error body before closing
        response.close()
        raise error_from_status(provider, response)
    if cancel is not None:
        # From now on a cancellation (client gone, a timeout, shutdown) ends the read at once.
        cancel.on_cancel(lambda _reason: _shut(response))
        if cancel.cancelled:
            response.close()
            raise Cancelled(cancel.reason or "")
    return response


def _shut(response: requests.Response) -> None:
    """Stop reads of a response from another thread or greenlet. A response already read (or
    released to the pool, where another call may be using its connection) is left alone."""
    with contextlib.suppress(AttributeError, RuntimeError, ValueError, OSError):
        response.raw.shutdown()


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
    except (requests.RequestException, UnicodeDecodeError) as exc:
        if _timed_out(exc):
            raise ProviderError("timeout", f"Provider {provider!r} stalled mid-stream.") from None
        raise ProviderError("upstream", f"Provider {provider!r} broke off the stream.") from None


# How long a stream's body may take to end after its last event. The chunked terminator normally
# comes with the last event or right after it; a server slower than this loses the connection.
DRAIN_TIMEOUT = 0.25
# Events a stream may still send after its protocol's end marker before it is not waited for.
DRAIN_EVENTS = 8


def drain(events: Iterator[tuple[str | None, str]], response: requests.Response) -> None:
    """At a stream's end marker (`[DONE]`, `message_stop`, ...): read what is left of the body, so
    that `response.close()` gives its connection back to the session's pool instead of closing it.
    Otherwise every stream costs a new upstream connection: a DNS lookup (on gevent's thread pool)
    and a TCP, or TLS, handshake. A body that does not end within DRAIN_TIMEOUT (or DRAIN_EVENTS
    more events), or that breaks, is dropped with its connection, as before."""
    sock = getattr(getattr(response.raw, "connection", None), "sock", None)
    if sock is None:
        return
    try:
        sock.settimeout(DRAIN_TIMEOUT)  # urllib3 sets its own again when the connection is reused
        for count, _event in enumerate(events):
            if count >= DRAIN_EVENTS:
                return
    except (ProviderError, OSError):
        return


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


def read_count(provider: str, body: dict[str, Any], name: str, default: int | None = None) -> int:
    """A token count an upstream's count endpoint answered with (`body[name]`)."""
    value = body.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProviderError("upstream", f"Provider {provider!r} answered the token count without a count.")
    return value

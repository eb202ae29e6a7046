"""Outbound HTTP for providers: one urllib3 connection pool per provider entry, timeouts always set.

Every upstream call goes through `post()`, which turns transport failures into `ProviderError`s
with a kind the gateway maps to a client status (timeouts 504, connection failures 502, ...).

The four timeouts (`Timeouts`: connect, first byte, idle gap, total) are enforced by the upstream
guard (providers/guard.py), which watches the clock while the call runs in a helper and, when a
limit passes (or the client leaves), cancels the call's token. The token then shuts the upstream
socket down for reading, which ends a blocked read in any thread or greenlet without touching
what else the process is doing: until the headers are in (and, for an answer that is not
streamed, its whole body), through the connection class of the entry's pools
(`_AbortableConnection`); after them, through `HTTPResponse.shutdown()`, urllib3's public way to
stop a response's reads. The socket timeouts given to urllib3 are only a safety net, and a
streamed body, once its headers are in, is read without one (`_untimed`).

Calls go to urllib3 directly: `requests`' per-call session machinery (merging settings, preparing
the request, hooks, a cookie jar, the response wrapper) cost about 1.5 ms of CPU per call. What it
did implicitly, `Upstream` and `post` do themselves, the same way:

- the environment's settings for the endpoint, read once when the entry's `Upstream` is made:
  the proxy (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, minus the hosts in `NO_PROXY`, by requests'
  own rules; a `user:password@` in it becomes `Proxy-Authorization`), the CA bundle
  (`REQUESTS_CA_BUNDLE`, else `CURL_CA_BUNDLE`, else certifi's; `SSL_CERT_FILE` is not read, as it
  was not before) and `~/.netrc` (`NETRC`) credentials for the host, which are sent as Basic
  `Authorization` in place of the provider's own header, as requests did. requests' own helpers
  read them, so the rules are its rules; they are imported only when the environment names a
  proxy or a netrc file exists (`_from_environment`), since requests and what it loads cost each
  worker about 4 MB of memory for nothing otherwise;
- TLS certificates and host names are always verified;
- compressed answers: the request accepts gzip and deflate (and br/zstd when their decoders are
  installed), and bodies are decoded, streamed or not;
- redirects are not followed: a 3xx answer is an upstream error, like a 5xx (requests followed
  them, re-sending the body and the provider's key headers to wherever a 307 pointed).
"""

from __future__ import annotations

import contextlib
import contextvars
import http.client
import io
import logging
import os
import socket
import ssl
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, cast

import certifi
from opentelemetry import propagate
from urllib3 import BaseHTTPResponse, HTTPResponse, PoolManager, ProxyManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProxySchemeUnknown,
    ReadTimeoutError,
)
from urllib3.util import Timeout, make_headers
from urllib3.util.ssl_ import create_urllib3_context

from gateway_project import fast_json
from gateway_project.concurrency import readable_now
from responses_app.cancellation import Cancelled, CancelToken
from responses_app.providers.base import ProviderError

logger = logging.getLogger(__name__)

# Under gevent one worker holds many concurrent upstream calls; keep that many sockets warm.
POOL_SIZE = 64
ACCEPT_ENCODING = make_headers(accept_encoding=True)["accept-encoding"]


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


# The read buffer of an upstream answer (http.client's default is 8 KB). It is held as long as the
# answer, and a stream's answer as long as the stream: 8.2 KB of the ~80 KB of objects an open
# stream held (issue 13, 1,000 concurrent streams). The status line and headers are read through it
# (an API's headers are 1-2 KB: one read either way); the body's reads ask for more than it holds
# and bypass it.
_READ_BUFFER = 2048
# The most one read of a body that is neither chunked nor of a known length asks for. An empty
# buffered reader's `read1(n)` allocates its n-byte result before it waits for the socket, so a
# stream waiting for its next event held all of it: 64 KB per open stream at 65536. SSE events are
# far smaller; a larger burst takes a few reads.
_STREAM_READ = 8192


class _SmallReadBuffer:
    """Hands http.client's response the socket's reader with a `_READ_BUFFER`-byte buffer: its
    `__init__` asks for `sock.makefile("rb")` and uses the socket for nothing else."""

    __slots__ = ("sock",)

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def makefile(self, mode: Literal["rb"]) -> io.BufferedReader:
        return cast("io.BufferedReader", self.sock.makefile(mode, _READ_BUFFER))  # typeshed: IOBase for a size


class _LeanResponse(http.client.HTTPResponse):
    """http.client's response, reading through a buffer of `_READ_BUFFER` bytes."""

    def __init__(self, sock: socket.socket, debuglevel: int = 0, method: str | None = None,
                 url: str | None = None) -> None:
        super().__init__(cast("socket.socket", _SmallReadBuffer(sock)), debuglevel, method, url)


class _AbortableConnection:
    """Mixed into urllib3's connection classes: while this connection waits for a response (its
    status line and headers, and the body when it is read in one go), cancelling the call's token
    shuts its socket down, so the wait ends at once. Its answers read through `_LeanResponse`."""

    sock: socket.socket | None
    _waiting_for: CancelToken | None = None
    response_class: type[http.client.HTTPResponse] = _LeanResponse

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

    @property
    def is_connected(self) -> bool:
        # urllib3 asks this before it reuses a pooled connection. Its own check goes through
        # gevent's select, which switches to the event loop even with a zero timeout (2 % of a
        # small request's CPU, issue 13); the original select gives the same answer without one.
        return self.sock is not None and not readable_now(self.sock)

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


class _NoSOCKS(PoolManager):
    """Stands in for a SOCKS proxy when PySocks is not installed: every call fails to connect."""

    def urlopen(self, method: str, url: str, redirect: bool = True,  # type: ignore[override]  # PoolManager's own
                **kw: Any) -> BaseHTTPResponse:
        raise ProxySchemeUnknown("socks (install PySocks)")


def _from_environment(endpoint: str) -> tuple[str | None, tuple[str, str] | None]:
    """The proxy (with its scheme) and the netrc credentials the environment gives the endpoint, as
    requests finds them. requests' helpers are imported only when there can be either: a proxy
    variable set (`getproxies()` is what requests reads them with), or a netrc file where requests
    looks for one (`NETRC`, else `~/.netrc` or `~/_netrc`)."""
    netrc = os.environ.get("NETRC")
    netrc_files = [netrc] if netrc is not None else ["~/.netrc", "~/_netrc"]
    if not urllib.request.getproxies() and not any(os.path.exists(os.path.expanduser(f)) for f in netrc_files):
        return None, None
    from requests.utils import get_environ_proxies, get_netrc_auth, prepend_scheme_if_needed, select_proxy

    proxy = select_proxy(endpoint, get_environ_proxies(endpoint))
    return (prepend_scheme_if_needed(proxy, "http") if proxy else None), get_netrc_auth(endpoint)


def _basic_auth(username: str, password: str) -> str:
    from requests.auth import _basic_auth_str  # imported already: there are credentials

    return _basic_auth_str(username, password)


def _credentials_in(proxy: str) -> tuple[str, str]:
    from requests.utils import get_auth_from_url  # imported already: there is a proxy

    return get_auth_from_url(proxy)


class Upstream:
    """The connections to one provider entry's endpoint: a pool of up to POOL_SIZE kept-alive
    connections, direct or through the proxy the environment names for the endpoint, with the
    environment's CA bundle and netrc credentials. Everything is read from the environment once,
    here: an entry's calls all go to its endpoint's host, which is all that NO_PROXY and netrc
    depend on."""

    def __init__(self, endpoint: str) -> None:
        self.proxy, self.auth = _from_environment(endpoint)
        self.ca_bundle: str = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or \
            certifi.where()  # requests' DEFAULT_CA_BUNDLE_PATH
        self.headers = {"Accept-Encoding": ACCEPT_ENCODING}
        # Sent in place of the provider's own `Authorization`, as requests' session auth was.
        self.authorization = _basic_auth(*self.auth) if self.auth else None
        self.manager = self._manager(self._tls(endpoint))

    def _tls(self, endpoint: str) -> dict[str, Any]:
        if not endpoint.lower().startswith("https:"):
            return {}
        directory = os.path.isdir(self.ca_bundle)
        # One context per entry, so that a new connection does not load the CA bundle again.
        context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
        try:
            context.load_verify_locations(**{"capath" if directory else "cafile": self.ca_bundle})
        except OSError as exc:  # ssl.SSLError is one
            # Every call fails to connect (urllib3 tries the bundle again), as requests' did.
            logger.warning("The CA bundle %s cannot be read (%s); calls to %s will fail.", self.ca_bundle, exc,
                           endpoint)
            return {"ca_cert_dir" if directory else "ca_certs": self.ca_bundle}
        return {"ssl_context": context}

    def _manager(self, tls: dict[str, Any]) -> PoolManager:
        sizes: dict[str, Any] = {"num_pools": 1, "maxsize": POOL_SIZE, "block": False, **tls}
        if self.proxy is None:
            manager = PoolManager(**sizes)
        elif self.proxy.lower().startswith("socks"):
            try:
                from urllib3.contrib.socks import SOCKSProxyManager
            except ImportError:
                logger.warning("The proxy %s needs PySocks, which is not installed.", self.proxy)
                return _NoSOCKS()
            username, password = _credentials_in(self.proxy)
            # urllib3's own SOCKS pools: there a cancel before the headers waits for the socket timeout.
            return SOCKSProxyManager(self.proxy, username=username or None, password=password or None, **sizes)
        else:
            username, password = _credentials_in(self.proxy)
            headers = {"Proxy-Authorization": _basic_auth(username, password)} if username else None
            manager = ProxyManager(self.proxy, proxy_headers=headers, **sizes)
        manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
        return manager

    def close(self) -> None:
        self.manager.clear()


class UpstreamResponse:
    """An upstream's answer: its status and headers, and its body (`read_json`, or `sse_events` for
    a stream). Closing it gives its connection back to the pool when the body was read to its end
    (a non-streamed answer always is), and otherwise drops the connection."""

    __slots__ = ("raw",)

    def __init__(self, raw: HTTPResponse) -> None:
        self.raw = raw

    @property
    def status(self) -> int:
        return self.raw.status

    @property
    def headers(self) -> Any:
        return self.raw.headers

    def close(self) -> None:
        self.raw.close()  # closes the socket only while the body is unread; a read one is back in the pool
        self.raw.release_conn()  # ... and a closed one goes back too, to be reconnected, so the pool keeps its size

    def __enter__(self) -> UpstreamResponse:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def _retry_after(response: UpstreamResponse) -> float | None:
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


def error_from_status(provider: str, response: UpstreamResponse) -> ProviderError:
    """Classify an upstream error status (or a redirect, which is not followed). Messages name the
    provider, never its credentials."""
    status = response.status
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


def upstream_message(response: UpstreamResponse) -> str:
    try:
        body = fast_json.loads(response.raw.data or b"")
    except ValueError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or "")
    if isinstance(error, str):
        return error
    return ""


def post(
    upstream: Upstream,
    provider: str,
    url: str,
    *,
    payload: dict[str, Any],
    headers: dict[str, str],
    timeout: Timeouts,
    stream: bool,
    cancel: CancelToken | None = None,
) -> UpstreamResponse:
    """POST `payload` as JSON to `url` (on `upstream`'s endpoint). A non-streamed answer comes back
    read whole, its connection already back in the pool; a streamed one with its body to read."""
    if cancel is not None:
        cancel.raise_if_cancelled()
    headers = {**upstream.headers, **headers}
    if upstream.authorization is not None:
        headers["Authorization"] = upstream.authorization
    # W3C trace context: the upstream sees the provider span as its parent (no-op without tracing).
    propagate.inject(headers)
    reset = _call_token.set(cancel)
    try:
        body = fast_json.dumps(payload).encode()
        raw = cast(HTTPResponse, upstream.manager.urlopen(
            "POST", url, body=body, headers=headers, redirect=False, retries=False, preload_content=not stream,
            timeout=Timeout(connect=timeout.connect, read=timeout.socket_read(stream=stream))))
    except NewConnectionError:
        # Refused, DNS (urllib3 makes it a kind of ConnectTimeoutError: caught first).
        raise ProviderError("upstream", f"Could not reach provider {provider!r}.", retryable=True) from None
    except ConnectTimeoutError:
        raise ProviderError("timeout", f"Could not connect to provider {provider!r} in time.", retryable=True) from None
    except ReadTimeoutError:
        raise ProviderError("timeout", f"Provider {provider!r} did not answer in time.") from None
    except (HTTPError, OSError, ValueError):
        # Reset before the answer, TLS, the proxy, a body that is not JSON (NaN): nothing was
        # generated, so another try is safe.
        raise ProviderError("upstream", f"Could not reach provider {provider!r}.", retryable=True) from None
    finally:
        _call_token.reset(reset)
    response = UpstreamResponse(raw)
    if raw.status >= 300:
        if stream:
            with contextlib.suppress(HTTPError, OSError):
                raw.read(cache_content=True)  # the error body, for its message (and the connection's reuse)
        response.close()
        raise error_from_status(provider, response)
    if cancel is not None:
        if stream:
            # From now on a cancellation (client gone, a timeout, shutdown) ends the read at once.
            cancel.on_cancel(lambda _reason: _shut(raw))
            _untimed(raw)
        if cancel.cancelled:
            response.close()
            raise Cancelled(cancel.reason or "")
    return response


def _untimed(raw: HTTPResponse) -> None:
    """A streamed body is read without a socket timeout: the guard's clock bounds the wait between
    events (`idle`, `total`) and its token ends the read when one passes, so the socket timeout
    only cost, under gevent, a Timeout object and a timer started and stopped on every read that
    waits, that is on every event of a slow stream (issue 13). urllib3 sets the timeout again
    when the connection is reused."""
    connection = raw.connection
    sock = connection.sock if connection is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.settimeout(None)


def _shut(raw: HTTPResponse) -> None:
    """Stop reads of a response from another thread or greenlet. A response already read (or
    released to the pool, where another call may be using its connection) is left alone."""
    with contextlib.suppress(AttributeError, RuntimeError, ValueError, OSError):
        raw.shutdown()


def read_json(provider: str, response: UpstreamResponse) -> dict[str, Any]:
    try:
        body = fast_json.loads(response.raw.data or b"")
    except ValueError:
        raise ProviderError("upstream", f"Provider {provider!r} sent a body that is not JSON.") from None
    except (HTTPError, OSError) as exc:
        if _timed_out(exc):
            raise ProviderError("timeout", f"Provider {provider!r} stalled while answering.") from None
        raise ProviderError("upstream", f"Provider {provider!r} broke off its answer.") from None
    if not isinstance(body, dict):
        raise ProviderError("upstream", f"Provider {provider!r} sent an unexpected body.")
    return body


def _chunks(raw: HTTPResponse) -> Iterator[bytes]:
    """The body as it arrives, decoded: chunk by chunk, or what each read of the socket gives."""
    if raw.chunked and raw.supports_chunked_reads():
        yield from raw.read_chunked(decode_content=True)
        return
    while data := raw.read1(_STREAM_READ):
        yield data


def _lines(raw: HTTPResponse) -> Iterator[bytes]:
    """The body's lines, without their ends (CRLF, LF or CR, as SSE allows), however the chunks cut them."""
    rest = b""
    for chunk in _chunks(raw):
        lines = (rest + chunk).splitlines(keepends=True)
        # The last line is unfinished, or ends with a CR whose LF may be in the next chunk.
        rest = lines.pop() if lines[-1][-1:] != b"\n" else b""
        for line in lines:
            yield line.rstrip(b"\r\n")
    if rest:
        yield rest.rstrip(b"\r\n")


def sse_events(provider: str, response: UpstreamResponse) -> Iterator[tuple[str | None, str]]:
    """(event name, data) pairs of an SSE body, per the WHATWG rules the providers follow."""
    event: str | None = None
    data: list[str] = []
    try:
        for raw in _lines(response.raw):
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
    except (HTTPError, OSError, UnicodeDecodeError) as exc:
        if _timed_out(exc):
            raise ProviderError("timeout", f"Provider {provider!r} stalled mid-stream.") from None
        raise ProviderError("upstream", f"Provider {provider!r} broke off the stream.") from None


# How long a stream's body may take to end after its last event. The chunked terminator normally
# comes with the last event or right after it; a server slower than this loses the connection.
DRAIN_TIMEOUT = 0.25
# Events a stream may still send after its protocol's end marker before it is not waited for.
DRAIN_EVENTS = 8


def drain(events: Iterator[tuple[str | None, str]], response: UpstreamResponse) -> None:
    """At a stream's end marker (`[DONE]`, `message_stop`, ...): read what is left of the body, so
    that `response.close()` gives its connection back to the entry's pool instead of closing it.
    Otherwise every stream costs a new upstream connection: a DNS lookup (on gevent's thread pool)
    and a TCP, or TLS, handshake. A body that does not end within DRAIN_TIMEOUT (or DRAIN_EVENTS
    more events), or that breaks, is dropped with its connection, as before."""
    sock = getattr(response.raw.connection, "sock", None)
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
    """A read timeout, as urllib3 raises it (or the socket's own, should one get through)."""
    return isinstance(exc, (ReadTimeoutError, TimeoutError))


def parse_data(provider: str, data: str) -> dict[str, Any]:
    try:
        value = fast_json.loads(data)
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

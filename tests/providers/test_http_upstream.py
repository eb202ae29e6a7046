"""What the upstream HTTP layer (responses_app.providers.http) does itself now that it calls urllib3
directly, over real sockets: the environment's proxy (with NO_PROXY) and CA bundle, netrc
credentials, TLS verification, compressed and chunked bodies, SSE lines however chunks cut them,
redirects not followed, and connections kept for the next call after errors and streams."""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from responses_app.cancellation import CancelToken
from responses_app.providers import http
from responses_app.providers.base import ProviderError
from tests.e2e.gunicorn import ROOT
from tests.fakes.proxy import RecordingProxy
from tests.fakes.server import FakeServer, Recorded, Writer
from tests.fakes.tls import Authority, make_authority

Step = Callable[[Recorded, Writer], None]
TIMEOUTS = http.Timeouts(connect=2, first_byte=5, idle=5, total=10)
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
                   "NETRC")


class Scripted(FakeServer):
    """Answers each request with its scripted step, a function of (recorded, writer); `{"ok": true}` by default."""

    def handle(self, recorded: Recorded, step: Any, writer: Writer) -> None:
        (step or ok)(recorded, writer)


def ok(recorded: Recorded, writer: Writer) -> None:
    writer.json(200, {"ok": True})


def sse(*parts: bytes, headers: dict[str, str] | None = None) -> Step:
    """A chunked SSE answer, one chunk per part, exactly as given."""
    def step(recorded: Recorded, writer: Writer) -> None:
        writer.start_stream(headers=headers)
        for part in parts:
            writer.chunk(part)
        writer.end_stream()
    return step


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def fake() -> Iterator[Scripted]:
    server = Scripted()
    yield server
    server.close()


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    return make_authority(tmp_path)


@pytest.fixture
def tls_fake(authority: Authority) -> Iterator[Scripted]:
    server = Scripted(tls=authority.server_context())
    yield server
    server.close()


@pytest.fixture
def proxy() -> Iterator[RecordingProxy]:
    server = RecordingProxy()
    yield server
    server.close()


def call(upstream: http.Upstream, url: str, *, stream: bool = False) -> http.UpstreamResponse:
    return http.post(upstream, "p", url, payload={"model": "m", "input": "héllo"}, timeout=TIMEOUTS, stream=stream,
                     headers={"Content-Type": "application/json", "Authorization": "Bearer sk-test"})


def answer(upstream: http.Upstream, url: str) -> dict[str, Any]:
    with call(upstream, url) as response:
        return http.read_json("p", response)


def events(upstream: http.Upstream, url: str) -> list[tuple[str | None, str]]:
    response = call(upstream, url, stream=True)
    try:
        return list(http.sse_events("p", response))
    finally:
        response.close()


def refused(upstream: http.Upstream, url: str) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        answer(upstream, url)
    return caught.value


def test_the_environments_settings_are_read_once_for_the_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    assert http.Upstream("https://api.example.com/v1").proxy == "http://proxy.example:3128"
    assert http.Upstream("https://internal.example/v1").proxy is None
    assert http.Upstream("http://api.example.com/v1").proxy is None  # HTTPS_PROXY is for https only


UPSTREAM_IN_A_FRESH_PROCESS = """
import sys
from responses_app.providers import http
upstream = http.Upstream("https://api.example.com/v1")
print(upstream.proxy, upstream.auth, "requests" in sys.modules)
"""


@pytest.mark.parametrize(("environment", "printed"), [
    ({}, "None None False"),
    ({"HTTPS_PROXY": "http://proxy.example:3128"}, "http://proxy.example:3128 None True"),
    ({"NETRC": "{netrc}"}, "None ('user', 'secret') True"),
])
def test_requests_is_loaded_only_when_the_environment_names_a_proxy_or_a_netrc_file(
        tmp_path: Path, environment: dict[str, str], printed: str) -> None:
    # requests and what it loads are about 4 MB of each worker; its helpers read these settings.
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.example.com login user password secret\n")
    netrc.chmod(0o600)
    clean = {name: value for name, value in os.environ.items()
             if name.upper() not in PROXY_VARIABLES and not name.lower().endswith("_proxy")}
    env = {**clean, "HOME": str(tmp_path), **{k: v.format(netrc=netrc) for k, v in environment.items()}}
    done = subprocess.run([sys.executable, "-c", UPSTREAM_IN_A_FRESH_PROCESS], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == printed


def test_a_ca_bundle_that_is_not_there_fails_each_call_not_the_start(monkeypatch: pytest.MonkeyPatch,
                                                                     tls_fake: Scripted) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/corporate.pem")
    upstream = http.Upstream(tls_fake.url)
    assert upstream.ca_bundle == "/nonexistent/corporate.pem"
    error = refused(upstream, f"{tls_fake.url}/v1/chat/completions")
    assert (error.kind, error.message, error.retryable) == ("upstream", "Could not reach provider 'p'.", True)


def test_a_call_goes_through_the_environments_proxy_unless_no_proxy_names_the_host(
        monkeypatch: pytest.MonkeyPatch, fake: Scripted, proxy: RecordingProxy) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url.replace("http://", "http://user:p%40ss@"))
    url = f"{fake.url}/v1/chat/completions?api-version=1"

    assert answer(http.Upstream(fake.url), url) == {"ok": True}

    [carried] = proxy.carried
    assert (carried.method, carried.target) == ("POST", url)
    assert carried.headers["proxy-authorization"] == "Basic " + base64.b64encode(b"user:p@ss").decode()
    assert fake.last.path == "/v1/chat/completions?api-version=1"
    assert fake.last.headers["authorization"] == "Bearer sk-test"  # the provider's key, not the proxy's
    assert "proxy-authorization" not in fake.last.headers
    assert fake.last.json == {"model": "m", "input": "héllo"}

    monkeypatch.setenv("NO_PROXY", "example.com,127.0.0.1")
    assert answer(http.Upstream(fake.url), url) == {"ok": True}
    assert len(proxy.carried) == 1 and len(fake.requests) == 2


def test_https_through_the_proxy_is_a_tunnel_with_the_certificate_still_checked(
        monkeypatch: pytest.MonkeyPatch, tls_fake: Scripted, proxy: RecordingProxy, authority: Authority) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    endpoint = f"https://localhost:{tls_fake.port}/v1"
    assert refused(http.Upstream(endpoint), f"{endpoint}/chat/completions").kind == "upstream"  # certifi's CAs only

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(authority.ca_file))
    assert answer(http.Upstream(endpoint), f"{endpoint}/chat/completions") == {"ok": True}
    assert [(c.method, c.target) for c in proxy.carried] == [("CONNECT", f"localhost:{tls_fake.port}")] * 2
    assert len(tls_fake.requests) == 1


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_the_ca_bundle_named_by_the_environment_verifies_the_upstream(
        monkeypatch: pytest.MonkeyPatch, tls_fake: Scripted, authority: Authority, variable: str) -> None:
    monkeypatch.setenv(variable, str(authority.ca_file))
    endpoint = f"https://localhost:{tls_fake.port}/v1"
    upstream = http.Upstream(endpoint)
    assert answer(upstream, f"{endpoint}/chat/completions") == {"ok": True}
    assert answer(upstream, f"{endpoint}/chat/completions") == {"ok": True}
    assert len({recorded.client_port for recorded in tls_fake.requests}) == 1  # one TLS connection, kept


def test_a_certificate_no_trusted_ca_signed_is_refused(tls_fake: Scripted) -> None:
    endpoint = f"https://localhost:{tls_fake.port}/v1"
    error = refused(http.Upstream(endpoint), f"{endpoint}/chat/completions")
    assert (error.kind, error.message, error.retryable) == ("upstream", "Could not reach provider 'p'.", True)
    assert tls_fake.requests == []


def test_a_certificate_for_another_host_name_is_refused(monkeypatch: pytest.MonkeyPatch, tls_fake: Scripted,
                                                        authority: Authority) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(authority.ca_file))
    # The certificate names localhost; the same server as 127.0.0.1 is someone else.
    assert refused(http.Upstream(tls_fake.url), f"{tls_fake.url}/v1/chat/completions").kind == "upstream"
    assert tls_fake.requests == []


def test_netrc_credentials_for_the_host_are_sent_in_place_of_the_providers_header(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake: Scripted) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login user password secret\nmachine other.example login x password y\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    upstream = http.Upstream(fake.url)
    assert upstream.auth == ("user", "secret")
    assert http.Upstream("https://elsewhere.example/v1").auth is None

    answer(upstream, f"{fake.url}/v1/chat/completions")
    assert fake.last.headers["authorization"] == "Basic " + base64.b64encode(b"user:secret").decode()


def test_compressed_answers_are_asked_for_and_decoded(fake: Scripted) -> None:
    body = {"id": "chatcmpl-1", "choices": [{"message": {"content": "é" * 500}}]}
    fake.script(lambda recorded, writer: writer.json(200, gzip.compress(json.dumps(body).encode()),
                                                     headers={"Content-Encoding": "gzip"}))
    upstream = http.Upstream(fake.url)
    assert answer(upstream, f"{fake.url}/v1/chat/completions") == body
    assert "gzip" in fake.last.headers["accept-encoding"]

    # A gzip stream, flushed per event as a server that compresses SSE must, read event by event.
    compressor = zlib.compressobj(wbits=31)
    frames = [f'data: {{"n": {n}}}\n\n'.encode() for n in range(5)] + [b"data: [DONE]\n\n"]
    parts = [compressor.compress(frame) + compressor.flush(zlib.Z_SYNC_FLUSH) for frame in frames]
    fake.script(sse(*parts[:-1], parts[-1] + compressor.flush(), headers={"Content-Encoding": "gzip"}))
    assert events(upstream, f"{fake.url}/v1/chat/completions") == [
        (None, json.dumps({"n": n})) for n in range(5)] + [(None, "[DONE]")]


def test_sse_lines_are_whole_however_the_chunks_cut_them(fake: Scripted) -> None:
    fake.script(sse(b"event: delta\r", b"\ndata: {\"text\": \"caf\xc3", b"\xa9\"}\r\n", b"\r", b"\n: comment\n",
                    b"data: line one\ndata: line two\n\ndata: [DONE]\r\n\r\n"))
    assert events(http.Upstream(fake.url), f"{fake.url}/v1/chat/completions") == [
        ("delta", '{"text": "café"}'), (None, "line one\nline two"), (None, "[DONE]")]


def test_a_stream_with_a_content_length_is_read_as_it_comes_and_its_connection_kept(fake: Scripted) -> None:
    body = b"".join(f'data: {{"n": {n}}}\n\n'.encode() for n in range(3)) + b"data: [DONE]\n\n"
    stream = lambda recorded, writer: writer.json(200, body, headers={"Content-Type": "text/event-stream"})  # noqa: E731
    fake.script(stream, stream)
    upstream = http.Upstream(fake.url)
    for _ in range(2):
        response = call(upstream, f"{fake.url}/v1/responses", stream=True)
        found = http.sse_events("p", response)
        assert next(found) == (None, '{"n": 0}')
        http.drain(found, response)
        response.close()
    assert len({recorded.client_port for recorded in fake.requests}) == 1


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_not_followed(fake: Scripted, status: int) -> None:
    elsewhere = Scripted()
    try:
        fake.script(lambda recorded, writer: writer.json(status, {}, headers={"Location": f"{elsewhere.url}/v1"}))
        error = refused(http.Upstream(fake.url), f"{fake.url}/v1/chat/completions")
        assert (error.kind, error.upstream_status) == ("upstream", status)
        assert error.message == f"Provider 'p' failed (upstream status {status})."
        assert elsewhere.requests == []
    finally:
        elsewhere.close()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_an_error_status_keeps_its_message_and_retry_after_and_the_connection(fake: Scripted, stream: bool) -> None:
    fake.script(lambda recorded, writer: writer.json(429, {"error": {"message": "slow down"}},
                                                     headers={"retry-after-ms": "1500"}),
                lambda recorded, writer: writer.json(404, {"error": {"message": "no such model"}}),
                sse(b"data: {}\n\n", b"data: [DONE]\n\n"))
    upstream = http.Upstream(fake.url)
    for kind, message, retry_after in (("rate_limited", "Provider 'p' is rate limiting requests.", 1.5),
                                       ("bad_request", "no such model", None)):
        with pytest.raises(ProviderError) as caught:
            call(upstream, f"{fake.url}/v1/chat/completions", stream=stream)
        assert (caught.value.kind, caught.value.message, caught.value.retry_after) == (kind, message, retry_after)
    assert events(upstream, f"{fake.url}/v1/chat/completions") == [(None, "{}"), (None, "[DONE]")]
    assert len({recorded.client_port for recorded in fake.requests}) == 1


def test_a_body_cut_short_is_an_upstream_error_and_the_next_call_connects_again(fake: Scripted) -> None:
    def cut(recorded: Recorded, writer: Writer) -> None:
        writer.start_stream()
        writer.chunk(b"data: {}\n\n")
        writer.drop()
    fake.script(cut)
    upstream = http.Upstream(fake.url)
    response = call(upstream, f"{fake.url}/v1/chat/completions", stream=True)
    found = http.sse_events("p", response)
    assert next(found) == (None, "{}")
    with pytest.raises(ProviderError) as caught:
        next(found)
    assert (caught.value.kind, caught.value.message) == ("upstream", "Provider 'p' broke off the stream.")
    response.close()
    assert answer(upstream, f"{fake.url}/v1/chat/completions") == {"ok": True}
    assert len({recorded.client_port for recorded in fake.requests}) == 2


def test_a_kept_alive_connection_the_upstream_closed_meanwhile_is_not_reused(fake: Scripted) -> None:
    # The first answer is whole and kept alive, then the server closes the connection, as an
    # upstream's idle timeout does. Reused, the next call would fail on a dead socket (retries are
    # off); the pool's check before reuse (`is_connected`) finds it closed and connects again.
    def answered_then_closed(recorded: Recorded, writer: Writer) -> None:
        writer.json(200, {"ok": True})
        writer.handler.wfile.flush()
        writer.drop()
    fake.script(answered_then_closed, ok)
    upstream = http.Upstream(fake.url)
    assert answer(upstream, f"{fake.url}/v1/chat/completions") == {"ok": True}
    time.sleep(0.05)  # the server's FIN reaches the pooled socket
    assert answer(upstream, f"{fake.url}/v1/chat/completions") == {"ok": True}
    assert len({recorded.client_port for recorded in fake.requests}) == 2


def test_a_streamed_body_waits_without_a_socket_timeout_until_its_token_is_cancelled(fake: Scripted) -> None:
    """The guard's clock bounds a stream's gaps and its token ends the read (http._untimed); the socket
    timeout (1 s here) is off for the body, and back on when the pooled connection is reused."""
    silent = threading.Event()

    def stalls(recorded: Recorded, writer: Writer) -> None:
        writer.start_stream()
        writer.chunk(b'data: {"n": 0}\n\n')
        silent.wait(10)  # then nothing, until the test ends

    fake.script(stalls, ok)
    upstream = http.Upstream(fake.url)
    token = CancelToken()
    short = http.Timeouts(connect=2, first_byte=1, idle=1, total=1)
    response = http.post(upstream, "p", f"{fake.url}/v1/chat/completions", payload={"model": "m"}, headers={},
                         timeout=short, stream=True, cancel=token)
    found = http.sse_events("p", response)
    assert next(found) == (None, '{"n": 0}')
    threading.Timer(2.5, token.cancel, args=["idle"]).start()
    started = time.monotonic()
    with pytest.raises((ProviderError, StopIteration)):
        next(found)  # blocked past the 1 s socket timeout, until the cancel at 2.5 s
    assert 2.3 < time.monotonic() - started < 5
    silent.set()
    response.close()
    assert answer(upstream, f"{fake.url}/v1/chat/completions") == {"ok": True}
    idle = upstream.manager.connection_from_url(fake.url).pool
    assert idle is not None
    connection = idle.queue[-1]  # the connection just put back
    assert connection.sock is None or connection.sock.gettimeout() is not None


def test_an_open_stream_reads_through_a_small_buffer_and_long_headers_still_arrive_whole(fake: Scripted) -> None:
    # An open stream holds its answer's read buffer as long as it lasts (http.client's is 8 KB).
    long_headers = {f"X-Upstream-{index}": "v" * 200 for index in range(30)}  # ~7 KB: several buffers' worth
    frames = [f'data: {{"n": {n}}}\n\n'.encode() for n in range(3)] + [b"data: [DONE]\n\n"]
    fake.script(sse(*frames, headers=long_headers),
                lambda recorded, writer: writer.json(200, {"ok": "é" * 20_000}, headers=long_headers))
    upstream = http.Upstream(fake.url)
    response = call(upstream, f"{fake.url}/v1/chat/completions", stream=True)
    try:
        answer = response.raw._fp
        assert answer is not None
        assert sys.getsizeof(answer.fp) < 4096  # the buffer counts in the reader's size
        assert response.headers["X-Upstream-29"] == "v" * 200
        assert list(http.sse_events("p", response)) == [(None, json.dumps({"n": n})) for n in range(3)] + [
            (None, "[DONE]")]
    finally:
        response.close()
    with call(upstream, f"{fake.url}/v1/chat/completions") as whole:
        assert whole.headers["X-Upstream-0"] == "v" * 200
        assert http.read_json("p", whole) == {"ok": "é" * 20_000}
    assert len({recorded.client_port for recorded in fake.requests}) == 1  # and the connection was kept


def test_a_stream_without_chunks_or_length_holds_little_while_it_waits_for_the_next_event(fake: Scripted) -> None:
    # Such a body is read as it comes; a read that asks for 64 KB holds all of it while it waits.
    def close_delimited(recorded: Recorded, writer: Writer) -> None:
        out = writer.handler.wfile
        out.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
        out.write(b'data: {"n": 0}\n\n')
        out.flush()
        release.wait(10)
        out.write(b'data: {"n": 1}\n\ndata: [DONE]\n\n')
        out.flush()
        writer.handler.close_connection = True

    streams = 10
    release = threading.Event()
    fake.script(*[close_delimited] * streams)
    upstream = http.Upstream(fake.url)
    started = threading.Semaphore(0)
    got: list[list[tuple[str | None, str]]] = []

    def one() -> None:
        response = call(upstream, f"{fake.url}/v1/chat/completions", stream=True)
        try:
            events = http.sse_events("p", response)
            first = next(events)
            started.release()
            got.append([first, *events])
        finally:
            response.close()

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        threads = [threading.Thread(target=one) for _ in range(streams)]
        for thread in threads:
            thread.start()
        for _ in range(streams):
            assert started.acquire(timeout=10)
        time.sleep(0.2)  # each is waiting in its next read
        held = (tracemalloc.get_traced_memory()[0] - before) / streams
    finally:
        release.set()
        for thread in threads:
            thread.join(10)
        tracemalloc.stop()
    assert got == [[(None, '{"n": 0}'), (None, '{"n": 1}'), (None, "[DONE]")]] * streams
    # About 40 KB (a chunked stream holds 28); a read asking for 64 KB made it about 96.
    assert held < 64 * 1024, held

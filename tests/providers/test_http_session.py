"""The provider session reads the environment's proxy, CA bundle and netrc settings once, when it is
made, and sends every call with them (responses_app.providers.http.new_session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from responses_app.providers import http


def test_the_proxy_for_the_endpoint_is_taken_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/corporate.pem")
    proxied = http.new_session("https://api.example.com/v1")
    assert proxied.proxies.get("https") == "http://proxy.example:3128"
    assert proxied.verify == "/etc/ssl/certs/corporate.pem"
    assert not proxied.trust_env  # nothing is looked up again per call
    assert http.new_session("https://internal.example/v1").proxies == {}


def test_netrc_credentials_for_the_host_are_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine llm.example login user password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert http.new_session("https://llm.example/v1").auth == ("user", "secret")
    assert http.new_session("https://other.example/v1").auth is None

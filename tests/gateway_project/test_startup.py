"""gunicorn's start-up: one line saying where and what is on, and no listening beyond loopback with auth off."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway_project.config import parse_config
from gateway_project.startup import StartupError, check_exposure, summary

ROOT = Path(__file__).resolve().parents[2]
GUNICORN = str(Path(sys.executable).parent / "gunicorn")
SECRET = "startup-test-secret-" + "x" * 40
EVERY = "0.0.0.0"  # noqa: S104 - an address the checks are given, never bound here


def test_the_default_bind_is_loopback():
    config = parse_config({})
    assert config.server.address == "127.0.0.1:8080" and config.server.bind == "127.0.0.1:8080"
    assert parse_config({"server": {"address": ":8080"}}).server.bind == "0.0.0.0:8080"


@pytest.mark.parametrize("address", [("127.0.0.1", 8080), ("127.0.0.9", 1), ("::1", 8080), ("localhost", 80),
                                      "/run/gateway.sock", 3])
def test_a_local_address_is_served_with_auth_off(address):
    check_exposure(parse_config({}), [address])


@pytest.mark.parametrize("address, shown", [((EVERY, 8080), "0.0.0.0:8080 (every interface)"),
                                             (("", 8080), "0.0.0.0:8080 (every interface)"),
                                             (("::", 8080), "[::]:8080 (every interface)"),
                                             (("10.1.2.3", 9000), "10.1.2.3:9000"),
                                             (("gateway.internal", 9000), "gateway.internal:9000")])
def test_listening_beyond_loopback_with_auth_off_is_refused(address, shown):
    with pytest.raises(StartupError) as error:
        check_exposure(parse_config({}), [("127.0.0.1", 8080), address])
    assert str(error.value).startswith(f"refusing to listen on {shown} with auth off")
    assert "auth.enabled: true" in str(error.value) and "server.expose_without_auth: true" in str(error.value)


def test_auth_or_an_explicit_opt_in_allows_every_interface():
    check_exposure(parse_config({"auth": {"enabled": True}}), [(EVERY, 8080)])
    check_exposure(parse_config({"server": {"expose_without_auth": True}}), [(EVERY, 8080)])


CONFIG = {
    "providers": {"demo": {"type": "demo"}, "openai": {"type": "openai", "api_key": "${STARTUP_TEST_UNSET_KEY}"},
                  "google": {"type": "google"}},
    "models": [{"name": "demo", "provider": "demo"}],
}


def test_the_summary_is_one_line_naming_the_address_the_file_and_what_is_on():
    config = parse_config(CONFIG)
    line = summary(config, "/etc/gateway/config.yaml", ["http://127.0.0.1:8080"], 2, {})
    assert "\n" not in line
    assert line == (
        "gateway: listening on http://127.0.0.1:8080 (2 workers), config /etc/gateway/config.yaml; auth off, "
        "rate limits off, metrics off, tracing off, WebSocket mode on; providers without an api_key, whose models "
        "answer 503: openai (set STARTUP_TEST_UNSET_KEY), google (set providers.google.api_key)")


def test_the_summary_says_how_each_feature_is_on():
    config = parse_config({
        "auth": {"enabled": True, "issuer": "https://idp.example.com"},
        "rate_limit": {"enabled": True, "requests_per_minute": 60, "tokens_per_minute": 1000},
        "observability": {"enabled": True, "tracing": {"enabled": True, "exporter": {"endpoint": "jaeger:4317"}}},
        "server": {"websocket": {"enabled": False}},
        "providers": {"demo": {"type": "demo"}},
    })
    line = summary(config, "c.yaml", ["http://0.0.0.0:8080", "unix:/run/gw.sock"], 1, {"REDIS_URL": "redis://r"})
    assert line == ("gateway: listening on http://0.0.0.0:8080, unix:/run/gw.sock (1 worker), config c.yaml; "
                    "auth on (API keys, OIDC https://idp.example.com), rate limits on (60 rpm, 1000 tpm, Redis), "
                    "metrics on /metrics, tracing on (OTLP grpc jaeger:4317), WebSocket mode off")
    assert "per worker: REDIS_URL unset" in summary(config, "c.yaml", [], 1, {})


def _gunicorn(tmp_path: Path, config_text: str, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.yaml"
    config.write_text(config_text)
    env = {"PATH": "/usr/bin:/bin", "GATEWAY_CONFIG": str(config), "DATABASE_URL": "sqlite:///:memory:",
           "SECRET_KEY": SECRET}
    return subprocess.run([GUNICORN, "-c", "gateway_project/gunicorn.conf.py", "gateway_project.wsgi", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_gunicorn_refuses_every_interface_with_auth_off_before_listening(tmp_path):
    # The refusal comes before any socket is opened or worker forked: one line, status 2.
    result = _gunicorn(tmp_path, "providers: {demo: {type: demo}}\n", "-b", "0.0.0.0:0")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "config error: refusing to listen on 0.0.0.0:0 (every interface) with auth off, where anyone who can reach "
        "it spends the provider keys and reads every stored response. Turn auth on (auth.enabled: true), listen on "
        "127.0.0.1, or set server.expose_without_auth: true if something in front authenticates"]

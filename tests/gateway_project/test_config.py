"""config.yaml: the seed's schema, ${VAR} expansion, and one clear line for a bad file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from gateway_project.config import ConfigError, GatewayConfig, expand_env, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]


def test_the_example_config_is_valid_and_has_a_demo_model():
    config = load_config(ROOT / "config.example.yaml")
    demo = config.model("demo")
    assert demo is not None and demo.provider == "demo"
    assert {p.type for p in config.providers.values()} >= {"openai", "anthropic", "google", "demo"}


def test_defaults_follow_the_seed():
    config = parse_config({})
    assert config.server.address == "127.0.0.1:8080"  # not the seed's ":8080": tests/gateway_project/test_startup.py
    assert config.server.max_request_body_size == 10485760
    assert config.logging.format == "json" and config.logging.level == "info"
    assert config.observability.metrics.path == "/metrics"
    assert config.observability.tracing.service_name == "llm-gateway"
    assert config.observability.tracing.sampler.rate == 0.1


def test_env_references_are_expanded_after_parsing():
    env = {"KEY": "sk-a:b#c", "PORT": "9090"}
    assert expand_env({"a": "${KEY}", "b": ["x-${PORT}"], "c": "${MISSING:-fallback}", "d": "${MISSING}"}, env) == {
        "a": "sk-a:b#c", "b": ["x-9090"], "c": "fallback", "d": ""}


def test_durations_accept_go_style_strings():
    config = parse_config({"conversations": {"ttl": "15m", "retention": "90d"},
                           "providers": {"p": {"type": "openai", "read_timeout": "500ms"}}})
    assert config.conversations.ttl == 900
    assert config.conversations.retention == 90 * 86400
    assert parse_config({}).conversations.retention is None  # unset: conversations are kept
    assert config.providers["p"].read_timeout == 0.5


@pytest.mark.parametrize("data, message", [
    ({"providers": {"x": {"type": "bogus"}}}, "providers.x.type: unknown provider type 'bogus'"),
    ({"providers": {}, "models": [{"name": "m", "provider": "ghost"}]},
     "models[0].provider: model 'm' points at unknown provider 'ghost'"),
    ({"server": {"max_request_body_size": "big"}}, "server.max_request_body_size: Input should be a valid integer"),
    ({"server": {"adress": ":1"}}, "server.adress: unknown key"),
    ({"observability": {"tracing": {"sampler": {"type": "sometimes"}}}}, "observability.tracing.sampler.type:"),
    ({"conversations": {"ttl": "forever"}}, "conversations.ttl: expected a duration"),
    ({"conversations": {"retention": "forever"}}, "conversations.retention: expected a duration"),
    ({"conversations": {"retention": "0s"}}, "conversations.retention: Input should be greater than 0"),
    ([1, 2], "the file must be a YAML mapping"),
])
def test_a_bad_config_names_the_key(data, message):
    with pytest.raises(ConfigError) as error:
        parse_config(data)
    assert str(error.value).startswith(message)


def _start(config_text: str, tmp_path: Path, *command: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.yaml"
    config.write_text(config_text)
    env = {"PATH": "/usr/bin:/bin", "GATEWAY_CONFIG": str(config), "DATABASE_URL": "sqlite:///:memory:"}
    return subprocess.run([sys.executable, *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("command", [("manage.py", "check"),
                                      (str(Path(sys.executable).parent / "gunicorn"), "-c",
                                       "gateway_project/gunicorn.conf.py", "--check-config", "gateway_project.wsgi")])
def test_start_up_stops_with_one_line_not_a_traceback(tmp_path, command):
    result = _start("providers:\n  a: {type: openai}\nmodels:\n  - {name: m, provider: b}\n", tmp_path, *command)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("config error: ") and "models[0].provider" in lines[0]
    assert "Traceback" not in result.stderr


def test_invalid_yaml_names_the_line(tmp_path):
    result = _start("server:\n  address: [oops\n", tmp_path, "manage.py", "check")
    assert result.returncode == 2
    assert "not valid YAML at line" in result.stderr


def test_reading_settings_gateway_asks_the_config_for_no_missing_attribute(settings, monkeypatch):
    """Django's settings ask every value they hand out for `_mask_wrapped`. On a pydantic model a
    missing attribute goes through its `__getattr__`, which raises: 2.2 us on each of the 9-11 reads
    of `settings.GATEWAY` a request makes. The config's class answers it instead."""
    asked: list[str] = []
    missing = vars(BaseModel)["__getattr__"]  # pydantic defines it for run time only (not for type checkers)

    def counting(self: GatewayConfig, name: str) -> object:
        asked.append(name)
        return missing(self, name)

    monkeypatch.setattr(GatewayConfig, "__getattr__", counting)
    settings.GATEWAY = parse_config({})
    assert isinstance(settings.GATEWAY, GatewayConfig)
    assert settings.GATEWAY.observability is not None
    assert asked == []

"""manage.py check_config: the effective config with secrets redacted, or the error line and a
non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import call_command

from gateway_project.config import parse_config
from responses_app.management.commands.check_config import redact

ROOT = Path(__file__).resolve().parents[2]

SECRETS = {
    "providers": {
        "openai": {"type": "openai", "api_key": "sk-live-0123456789abcdef",
                   "endpoint": "https://proxy-user:hunter22@llm.example.com/v1"},
        "local": {"type": "openai", "endpoint": "http://127.0.0.1:8000/v1"},
    },
    "models": [{"name": "m", "provider": "openai"}, {"name": "l", "provider": "local"}],
    "auth": {"metrics": {"bearer_token": "metrics-token-value"}},
    "observability": {"tracing": {"exporter": {"headers": {"x-honeycomb-team": "plain-looking-value"}}}},
    "conversations": {"dsn": "postgres://gw:db-password-1@db/gw", "retention": "90d"},
}


def _check(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("check_config", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_effective_config_is_printed_with_every_secret_redacted(settings: Any):
    settings.GATEWAY = parse_config(SECRETS)
    out, err = _check()
    for secret in ("sk-live-0123456789abcdef", "hunter22", "metrics-token-value", "plain-looking-value",
                   "db-password-1"):
        assert secret not in out
    shown = yaml.safe_load(out)
    assert out.startswith("# effective config from ")
    assert shown["providers"]["openai"]["api_key"] == "[redacted]"
    assert shown["providers"]["openai"]["endpoint"] == "https://proxy-user:[redacted]@llm.example.com/v1"
    assert shown["providers"]["local"]["api_key"] == ""  # missing stays visibly missing
    assert shown["providers"]["local"]["endpoint"] == "http://127.0.0.1:8000/v1"
    assert shown["auth"]["metrics"]["bearer_token"] == "[redacted]"
    assert shown["observability"]["tracing"]["exporter"]["headers"] == {"x-honeycomb-team": "[redacted]"}
    assert shown["conversations"]["dsn"] == "postgres://gw:[redacted]@db/gw"
    # Defaults are filled in: this is what the gateway runs with.
    assert shown["conversations"]["retention"] == 90 * 86400
    assert shown["server"]["turn_timeout"] == 600
    assert "config ok: 2 provider(s), 2 model(s)" in err


def test_credential_shaped_values_are_redacted_under_any_key():
    assert redact({"note": "use AIzaSyA0123456789abcdefghijklmnop please"}) == {"note": "use [redacted] please"}
    assert redact({"tokens_per_minute": 5, "redis_key_prefix": "gw:rl:"}) == {"tokens_per_minute": 5,
                                                                                "redis_key_prefix": "gw:rl:"}


def test_missing_keys_are_warned_about(settings: Any):
    settings.GATEWAY = parse_config({"providers": {"claude": {"type": "anthropic", "api_key": "${NOPE_NOT_SET}"}}})
    _, err = _check()
    assert "warning: provider 'claude' has no api_key; set NOPE_NOT_SET" in err


def test_another_file_can_be_checked(tmp_path: Path):
    good = tmp_path / "good.yaml"
    good.write_text("providers: {demo: {type: demo}}\nmodels: [{name: demo, provider: demo}]\n")
    out, _ = _check("--config", str(good))
    assert f"# effective config from {good}" in out
    assert yaml.safe_load(out)["models"][0]["name"] == "demo"


@pytest.mark.parametrize("how", ["GATEWAY_CONFIG", "--config"])
def test_an_invalid_config_exits_non_zero_with_the_error_line(tmp_path: Path, how: str):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - name: m\n    provider: ghost\n")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "gateway_project.settings"}
    args = [sys.executable, "manage.py", "check_config"]
    if how == "GATEWAY_CONFIG":
        env["GATEWAY_CONFIG"] = str(bad)
    else:
        env["GATEWAY_CONFIG"] = str(ROOT / "config.example.yaml")
        args += ["--config", str(bad)]
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip() == (f"config error: {bad}: models[0].provider: model 'm' points at unknown "
                                   "provider 'ghost' (configured: none)")

"""Production settings: `check --deploy` is clean, the public development key is refused, no `*` host default."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

ROOT = Path(__file__).resolve().parents[2]
GUNICORN = str(Path(sys.executable).parent / "gunicorn")
REFUSED = ("config error: SECRET_KEY is not set and DEBUG is off; the built-in key is public. Set SECRET_KEY (or "
           "SECRET_KEY_FILE) to a long random value, e.g. "
           "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`, the same on every instance")


def _run(*command: str, **env: str) -> subprocess.CompletedProcess[str]:
    # Only what an operator would set: nothing inherited from the suite's environment.
    base = {"PATH": "/usr/bin:/bin", "GATEWAY_CONFIG": str(ROOT / "config.example.yaml"),
            "DATABASE_URL": "sqlite:///:memory:"}
    return subprocess.run([sys.executable, *command], cwd=ROOT, env={**base, **env}, capture_output=True, text=True,
                          timeout=60)


def _settings(*names: str, **env: str) -> dict[str, object]:
    code = ("import django, json; django.setup(); from django.conf import settings; "
            f"print(json.dumps({{n: getattr(settings, n, None) for n in {list(names)!r}}}))")
    result = _run("-c", code, DJANGO_SETTINGS_MODULE="gateway_project.settings", **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_check_deploy_is_clean_with_production_settings():
    result = _run("manage.py", "check", "--deploy", "--fail-level", "WARNING",
                  SECRET_KEY=secrets.token_urlsafe(50), ALLOWED_HOSTS="gateway.example.com")
    assert result.returncode == 0, result.stdout + result.stderr
    # Six are silenced on purpose (gateway_project/settings.py): W004 (HSTS is opt-in) and W008
    # (TLS and its redirect belong to the proxy in front); admin.E408-E410 and W003, which look for
    # the admin's middlewares in MIDDLEWARE only (AdminOnlyMiddleware runs them, and its own check
    # looks for them where it does: tests/gateway_project/test_admin_only_middleware.py).
    assert "System check identified no issues (6 silenced)." in result.stdout


def test_check_deploy_stays_clean_with_https_behind_a_proxy_and_hsts_on():
    result = _run("manage.py", "check", "--deploy", "--fail-level", "WARNING",
                  SECRET_KEY=secrets.token_urlsafe(50), ALLOWED_HOSTS="gateway.example.com",
                  SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto", CSRF_TRUSTED_ORIGINS="https://admin.example.com",
                  SECURE_HSTS_SECONDS="31536000", SECURE_HSTS_INCLUDE_SUBDOMAINS="true", SECURE_HSTS_PRELOAD="true",
                  SECURE_SSL_REDIRECT="true")
    assert result.returncode == 0, result.stdout + result.stderr


def test_https_settings_come_from_the_environment():
    names = ("SECURE_PROXY_SSL_HEADER", "CSRF_TRUSTED_ORIGINS", "SECURE_HSTS_SECONDS", "SECURE_HSTS_PRELOAD",
             "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_SSL_REDIRECT")
    assert _settings(*names, SECRET_KEY="k" * 50) == {
        "SECURE_PROXY_SSL_HEADER": None, "CSRF_TRUSTED_ORIGINS": [], "SECURE_HSTS_SECONDS": 0,
        "SECURE_HSTS_PRELOAD": False, "SESSION_COOKIE_SECURE": True, "CSRF_COOKIE_SECURE": True,
        "SECURE_SSL_REDIRECT": False}
    assert _settings(*names, SECRET_KEY="k" * 50, SECURE_PROXY_SSL_HEADER="X-Forwarded-Ssl=on",
                     CSRF_TRUSTED_ORIGINS="https://a.example.com,https://b.example.com", SECURE_HSTS_SECONDS="60",
                     SECURE_HSTS_PRELOAD="true", SESSION_COOKIE_SECURE="false", CSRF_COOKIE_SECURE="false",
                     SECURE_SSL_REDIRECT="true") == {
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_SSL", "on"],
        "CSRF_TRUSTED_ORIGINS": ["https://a.example.com", "https://b.example.com"], "SECURE_HSTS_SECONDS": 60,
        "SECURE_HSTS_PRELOAD": True, "SESSION_COOKIE_SECURE": False, "CSRF_COOKIE_SECURE": False,
        "SECURE_SSL_REDIRECT": True}
    assert _settings("SECURE_PROXY_SSL_HEADER", SECRET_KEY="k" * 50,
                     SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto")["SECURE_PROXY_SSL_HEADER"] == [
        "HTTP_X_FORWARDED_PROTO", "https"]


def test_allowed_hosts_defaults_to_loopback_names_never_a_wildcard():
    assert _settings("ALLOWED_HOSTS", SECRET_KEY="k" * 50) == {"ALLOWED_HOSTS": ["localhost", "127.0.0.1", "[::1]"]}
    assert _settings("ALLOWED_HOSTS", SECRET_KEY="k" * 50, ALLOWED_HOSTS="gw.example.com,10.0.0.7") == {
        "ALLOWED_HOSTS": ["gw.example.com", "10.0.0.7"]}


def test_a_host_not_allowed_gets_an_api_error_not_an_html_page(db):
    response = Client(headers={"host": "evil.example"}).get("/v1/models")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "disallowed_host"


@pytest.mark.parametrize("env", [{}, {"SECRET_KEY": "dev-only-insecure-secret-key-change-me"}, {"DEBUG": "false"}])
def test_manage_py_refuses_the_public_key_with_debug_off(env):
    result = _run("manage.py", "check", **env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [REFUSED]


def test_gunicorn_refuses_the_public_key_once_in_the_master(tmp_path):
    # Before any worker is forked: one line and status 2, not workers failing to boot in a loop.
    result = subprocess.run([GUNICORN, "-c", "gateway_project/gunicorn.conf.py", "gateway_project.wsgi",
                             "-b", "127.0.0.1:0"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "GATEWAY_CONFIG": str(ROOT / "config.example.yaml"),
                                 "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [REFUSED]


def test_debug_on_accepts_the_development_key():
    assert _run("manage.py", "check", DEBUG="true").returncode == 0


def test_the_key_can_come_from_a_file(tmp_path):
    (tmp_path / "key").write_text("from-a-file-" + "k" * 40 + "\n")
    assert _settings("SECRET_KEY", SECRET_KEY_FILE=str(tmp_path / "key")) == {"SECRET_KEY": "from-a-file-" + "k" * 40}
    result = _run("manage.py", "check", SECRET_KEY_FILE=str(tmp_path / "missing"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"config error: SECRET_KEY_FILE: cannot read '{tmp_path / 'missing'}' (No such file or directory)"]

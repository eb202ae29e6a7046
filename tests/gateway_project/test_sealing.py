"""gateway_project.sealing: keys from the environment, rotation, owner binding, and a bad key at start-up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from gateway_project.sealing import PREFIX, Unsealable, check_keys, derived_key, seal, unseal

OLD, NEW, OTHER = (Fernet.generate_key().decode() for _ in range(3))
ROOT = Path(__file__).resolve().parents[2]


def test_it_opens_what_it_sealed_for_the_same_owner_only(settings: Any):
    settings.GATEWAY_COMPACTION_KEYS = [NEW]
    sealed = seal({"summary": "s"}, "acme")
    assert sealed.startswith(PREFIX) and "summary" not in sealed
    assert unseal(sealed, "acme") == {"summary": "s"}
    with pytest.raises(Unsealable):
        unseal(sealed, "globex")
    with pytest.raises(Unsealable):
        unseal(sealed, "")


def test_a_key_is_rotated_by_listing_the_new_one_first(settings: Any):
    settings.GATEWAY_COMPACTION_KEYS = [OLD]
    old_item = seal({"summary": "old"}, "acme")
    settings.GATEWAY_COMPACTION_KEYS = [NEW, OLD]
    assert unseal(old_item, "acme") == {"summary": "old"}  # the old key still opens, second
    new_item = seal({"summary": "new"}, "acme")
    settings.GATEWAY_COMPACTION_KEYS = [NEW]
    assert unseal(new_item, "acme") == {"summary": "new"}  # the first key sealed it
    with pytest.raises(Unsealable):
        unseal(old_item, "acme")  # its key is gone
    settings.GATEWAY_COMPACTION_KEYS = [OTHER]
    with pytest.raises(Unsealable):
        unseal(new_item, "acme")


def test_without_keys_a_key_derived_from_secret_key_is_used(settings: Any):
    settings.GATEWAY_COMPACTION_KEYS = []
    settings.SECRET_KEY = "one-secret"
    sealed = seal({"summary": "s"}, "")
    settings.GATEWAY_COMPACTION_KEYS = [derived_key("one-secret").decode()]
    assert unseal(sealed, "") == {"summary": "s"}
    settings.GATEWAY_COMPACTION_KEYS = []
    settings.SECRET_KEY = "another-secret"
    with pytest.raises(Unsealable):
        unseal(sealed, "")


def test_only_fernet_keys_are_accepted():
    check_keys([NEW, OLD])
    with pytest.raises(ValueError, match="key 2 is not a Fernet key"):
        check_keys([NEW, "not-a-key"])


def test_a_bad_key_stops_start_up_with_one_line():
    env = {**os.environ, "GATEWAY_COMPACTION_KEYS": f"{NEW}, short", "DJANGO_SETTINGS_MODULE": "tests.settings"}
    run = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "config error: GATEWAY_COMPACTION_KEYS: key 2 is not a Fernet key (32 url-safe base64-encoded bytes; make one "
        "with `python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)"]


def test_cryptography_is_loaded_only_when_something_is_sealed():
    """A worker that never compacts does not carry cryptography's Rust extension (about 9 MB)."""
    script = """
import sys
from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver
get_wsgi_application()  # settings, apps, every middleware
get_resolver().url_patterns  # every view module
rust = "cryptography.hazmat.bindings._rust"
print(rust in sys.modules)
from gateway_project.sealing import seal, unseal
print(unseal(seal({"a": 1}, "tenant"), "tenant") == {"a": 1}, rust in sys.modules)
"""
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_COMPACTION_KEYS"}
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    run = subprocess.run([sys.executable, "-W", "ignore", "-c", script], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "True", "True"]

"""Credentials never reach a client, a log line or a span through an upstream's error message."""

from __future__ import annotations

import logging

from responses_app.providers.base import ProviderError
from responses_app.providers.scrub import scrub
from tests.fakes.openai_upstream import Fail


def test_known_keys_and_anything_shaped_like_a_credential_are_redacted():
    text = ("Incorrect API key provided: sk-proj-abcdefgh12345678. url https://x/y?key=AIzaSyAb0123456789012345678901 "
            "Authorization: Bearer abc.def.ghijklmn {\"api_key\": \"zzzzzzzzzz\"} gwk_live_0123456789")
    cleaned = scrub(text)
    for secret in ("sk-proj-abcdefgh12345678", "AIzaSyAb0123456789012345678901", "abc.def.ghijklmn", "zzzzzzzzzz",
                   "gwk_live_0123456789"):
        assert secret not in cleaned
    assert scrub("Invalid value for 'metadata' key: too long") == "Invalid value for 'metadata' key: too long"


def test_an_upstream_that_echoes_the_gateways_key_is_scrubbed_everywhere(api, fake_openai, caplog):
    key = "sk-test-upstream-key"  # the key tests/conftest.py configures for the fake upstream
    fake_openai.script(Fail(400, f"Incorrect API key provided: {key}. Bad request.", type="invalid_request_error"))
    with caplog.at_level(logging.INFO):
        response = api.create(model="gpt-test", input="hi")
    assert response.status_code == 400
    assert key not in response.content.decode()
    assert "[redacted]" in response.json()["error"]["message"]
    assert key not in caplog.text
    assert key not in str(ProviderError("upstream", f"boom {key}"))

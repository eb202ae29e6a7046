"""The two references every body and event is checked against are really in force."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tests.contract import SPEC_PATH, require_spec, validate_against_sdk, validate_against_spec

BROKEN = {"id": "resp_1", "object": "response", "created_at": "yesterday", "model": "m", "output": [],
          "tools": [], "tool_choice": "auto", "parallel_tool_calls": True}


def test_the_sdk_types_reject_a_broken_response():
    with pytest.raises(ValidationError):
        validate_against_sdk("Response", BROKEN)


def test_the_openapi_spec_rejects_a_broken_response():
    # Skipped, with the path in the message, on a clone without ../shared/spec beside it.
    require_spec()
    assert SPEC_PATH.exists()
    with pytest.raises(AssertionError, match="does not match the OpenAPI spec"):
        validate_against_spec("Response", BROKEN)

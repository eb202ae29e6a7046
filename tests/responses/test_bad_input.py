"""Bad input gets an OpenAI error with the right status and param, and writes nothing."""

from __future__ import annotations

import pytest

from conversations_app.models import Conversation, Item, StoredResponse
from tests.contract import validate_against_spec
from tests.fakes.openai_upstream import Fail, Raw, Reply


def _counts():
    return (Conversation.objects.count(), StoredResponse.objects.count(), Item.objects.count())


CASES = [
    ("malformed json", "{not json", None, "invalid_json"),
    ("not an object", "[1, 2]", None, "invalid_json"),
    ("missing model", {"input": "x"}, "model", "missing_required_parameter"),
    ("missing input", {"model": "gpt-test"}, "input", "missing_required_parameter"),
    ("model of wrong type", {"model": 5, "input": "x"}, "model", "invalid_type"),
    ("input of wrong type", {"model": "gpt-test", "input": 5}, "input", "invalid_type"),
    ("empty input list", {"model": "gpt-test", "input": []}, "input", "empty_array"),
    # Item and tool types the gateway does not know are accepted (passed on to Responses-native
    # upstreams); a `type` that is not a string, or a known type without its fields, is not.
    ("item type not a string", {"model": "gpt-test", "input": [{"type": 5}]}, "input[0].type", "invalid_type"),
    ("custom tool call without call_id", {"model": "gpt-test", "input": [
        {"type": "custom_tool_call", "name": "patch", "input": "x"}]}, "input[0].call_id",
     "missing_required_parameter"),
    ("tool type not a string", {"model": "gpt-test", "input": "x", "tools": [{"type": ["web_search"]}]},
     "tools[0].type", "invalid_type"),
    ("namespace tool without tools", {"model": "gpt-test", "input": "x",
                                      "tools": [{"type": "namespace", "name": "crm"}]},
     "tools[0].tools", "missing_required_parameter"),
    ("bad content part",
     {"model": "gpt-test", "input": [{"role": "user", "content": [{"type": "input_text", "text": 5}]}]},
     "input[0].content[0].text", "invalid_type"),
    ("bad role", {"model": "gpt-test", "input": [{"role": "robot", "content": "x"}]}, "input[0].role", "invalid_value"),
    ("temperature as string", {"model": "gpt-test", "input": "x", "temperature": "0.5"}, "temperature", "invalid_type"),
    ("temperature too high", {"model": "gpt-test", "input": "x", "temperature": 3}, "temperature", "invalid_value"),
    ("stream not a bool", {"model": "gpt-test", "input": "x", "stream": "yes"}, "stream", "invalid_type"),
    ("max_output_tokens below 16", {"model": "gpt-test", "input": "x", "max_output_tokens": 15}, "max_output_tokens",
     "invalid_value"),
    ("too much metadata", {"model": "gpt-test", "input": "x", "metadata": {str(i): "v" for i in range(17)}},
     "metadata", "invalid_value"),
    ("bad tool", {"model": "gpt-test", "input": "x", "tools": [{"type": "function"}]}, "tools[0].name",
     "missing_required_parameter"),
    ("bad text format", {"model": "gpt-test", "input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}},
     "text.format.schema", "missing_required_parameter"),
    ("previous id with conversation", {"model": "gpt-test", "input": "x", "previous_response_id": "resp_1",
                                        "conversation": "conv_1"},
     "previous_response_id", "mutually_exclusive_parameters"),
    ("unknown model", {"model": "nope", "input": "x"}, "model", "model_not_found"),
    ("unknown previous response", {"model": "gpt-test", "input": "x", "previous_response_id": "resp_nope"},
     "previous_response_id", "previous_response_not_found"),
    # Found by tests/fuzz: `param` named pydantic's union branches and tags instead of the parameter.
    ("reasoning not an object", {"model": "gpt-test", "input": "x", "reasoning": 5}, "reasoning", "invalid_type"),
    ("reasoning item summary of wrong type", {"model": "gpt-test", "input": [{"type": "reasoning", "summary": 5}]},
     "input[0].summary", "invalid_type"),
    ("conversation of wrong type", {"model": "gpt-test", "input": "x", "conversation": []}, "conversation",
     "invalid_type"),
    ("context_management of wrong type", {"model": "gpt-test", "input": "x", "context_management": 5},
     "context_management", "invalid_type"),
    ("tool_choice object without a name", {"model": "gpt-test", "input": "x", "tool_choice": {"type": "function"}},
     "tool_choice.name", "missing_required_parameter"),
    ("tool_choice naming a function without its name", {"model": "gpt-test", "input": "x",
                                                        "tool_choice": {"type": "function"}},
     "tool_choice.name", "missing_required_parameter"),
]


@pytest.mark.parametrize("name, body, param, code", CASES, ids=[c[0] for c in CASES])
def test_it_rejects_bad_input_with_an_openai_error(api, fake_openai, name, body, param, code):
    before = _counts()
    for stream in (False, True):
        payload = body if isinstance(body, str) else {
            **body, **({"stream": True} if stream and "stream" not in body else {})}
        response = api.post("/v1/responses", payload)
        assert response.status_code == 400, response.content
        assert response["content-type"] == "application/json"
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error"
        assert error["param"] == param
        assert error["code"] == code
        assert response["x-should-retry"] == "false"
        validate_against_spec("ErrorResponse", response.json())
    assert _counts() == before
    assert fake_openai.requests == []


def test_an_oversized_body_is_a_413(api):
    response = api.create(model="gpt-test", input="x" * 70000)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert _counts() == (0, 0, 0)


def test_other_methods_are_a_json_405(api):
    for method, path in (("get", "/v1/responses"), ("put", "/v1/responses"), ("post", "/v1/responses/resp_1"),
                         ("delete", "/v1/responses/resp_1/input_items"), ("post", "/v1/models")):
        response = getattr(api.client, method)(path)
        assert response.status_code == 405, (method, path)
        assert response.json()["error"]["code"] == "method_not_allowed"
        assert response["allow"]


def test_unknown_routes_and_trailing_slashes_are_a_json_404(api):
    for path in ("/v1/nothing", "/v1/responses/", "/nope"):
        response = api.client.post(path)
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("step, status, code", [
    (Fail(500, "internal"), 502, "upstream_error"),
    (Fail(503, "overloaded"), 503, "upstream_error"),
    (Fail(401, "bad key sk-test-upstream-key"), 502, "upstream_error"),
    (Fail(400, "context too long"), 400, "upstream_bad_request"),
    (Fail(429, "slow down", headers={"Retry-After": "7"}), 429, "rate_limit_exceeded"),
    (Raw(200, b"not json at all"), 502, "upstream_error"),
    (Reply(first_byte_delay=6), 504, "upstream_timeout"),
])
def test_upstream_failures_map_to_client_errors(api, fake_openai, step, status, code):
    fake_openai.script(step)
    response = api.create(model="gpt-test", input="x")
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert "sk-test-upstream-key" not in response.content.decode()
    if status == 429:
        assert response["retry-after"] == "7"
    if status == 400:
        assert error["message"] == "context too long"
    assert _counts() == (0, 0, 0)


def test_an_unreachable_upstream_is_a_502(api, settings):
    from tests.conftest import gateway_config_for

    settings.GATEWAY = gateway_config_for("http://127.0.0.1:9")  # discard port: connection refused
    response = api.create(model="gpt-test", input="x")
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "server_error"

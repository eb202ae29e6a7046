"""GET /v1/models and GET /v1/models/{id}: configured names and aliases, as the SDK's `Model`."""

from __future__ import annotations

from typing import Any

import pytest
from openai._models import validate_type
from openai.types import Model

from tests.conftest import ApiClient, gateway_config_for


@pytest.fixture
def aliased(api: ApiClient, settings: Any, fake_openai: Any) -> ApiClient:
    settings.GATEWAY = gateway_config_for(fake_openai.url, models=[
        {"name": "gpt-test", "provider": "openai", "provider_model_id": "gpt-4o-mini-upstream",
         "aliases": ["fast", "team/fast"]},
        {"name": "demo", "provider": "demo"},
    ])
    return api


def test_the_list_has_every_name_and_alias_as_its_own_model(aliased: ApiClient) -> None:
    body = aliased.get("/v1/models").json()
    assert body["object"] == "list"
    assert [(m["id"], m["owned_by"]) for m in body["data"]] == [
        ("gpt-test", "openai"), ("fast", "openai"), ("team/fast", "openai"), ("demo", "demo")]
    for model in body["data"]:
        validate_type(type_=Model, value=model)
        assert set(model) == {"id", "object", "created", "owned_by"} and model["object"] == "model"


@pytest.mark.parametrize("name", ["gpt-test", "fast", "team/fast", "team%2Ffast", "demo"])
def test_a_model_is_retrieved_by_name_or_alias(aliased: ApiClient, name: str) -> None:
    response = aliased.get(f"/v1/models/{name}")
    assert response.status_code == 200
    model = response.json()
    validate_type(type_=Model, value=model)
    listed = {m["id"]: m for m in aliased.get("/v1/models").json()["data"]}
    assert model == listed[name.replace("%2F", "/")]


@pytest.mark.parametrize("name", ["nope", "gpt-4o-mini-upstream", "GPT-TEST", "fast/", "x%00y"])
def test_an_unknown_model_is_404_in_the_openai_error_shape(aliased: ApiClient, name: str) -> None:
    response = aliased.get(f"/v1/models/{name}")
    assert response.status_code == 404
    assert response["x-should-retry"] == "false"
    error = response.json()["error"]
    assert error == {"message": error["message"], "type": "invalid_request_error", "param": "model",
                     "code": "model_not_found"}
    assert "does not exist or you do not have access to it" in error["message"]


def test_head_and_other_methods(aliased: ApiClient) -> None:
    assert aliased.client.head("/v1/models/fast").status_code == 200
    response = aliased.delete("/v1/models/fast")
    assert response.status_code == 405 and response["Allow"] == "GET, HEAD"

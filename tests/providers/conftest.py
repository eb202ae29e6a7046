from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ApiClient
from tests.providers.harness import Fakes, _fake_servers, fakes, providers_config  # noqa: F401


@pytest.fixture
def api(db: None, settings: Any, fakes: Fakes) -> ApiClient:  # noqa: F811
    settings.GATEWAY = providers_config(fakes)
    return ApiClient()

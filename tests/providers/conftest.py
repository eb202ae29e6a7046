from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ApiClient
from tests.providers.harness import Fakes, _fake_servers, fakes, providers_config  # noqa: F401 - fixtures


@pytest.fixture
def api(db: None, settings: Any, fakes: Fakes) -> ApiClient:  # noqa: F811 - `fakes` is the fixture
    settings.GATEWAY = providers_config(fakes)
    return ApiClient()

"""Fixtures shared by end-to-end test modules."""

from collections.abc import Iterator

import pytest

from tests.e2e.every_provider import provider_fakes, provider_gateway  # noqa: F401 - fixtures
from tests.fakes.openai_upstream import FakeOpenAI


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    """A fake OpenAI upstream for the module's gateway (a module may override it, e.g. with a default reply)."""
    fake = FakeOpenAI()
    yield fake
    fake.close()

"""Fixtures shared by end-to-end test modules."""

from tests.e2e.every_provider import provider_fakes, provider_gateway  # noqa: F401 - fixtures

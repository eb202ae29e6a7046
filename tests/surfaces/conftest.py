"""Fixtures shared with the identity and observability tests: gateways with auth, rate limits or
metrics on, API keys."""

from tests.identity.conftest import configure, make_key, redis_prefix  # noqa: F401 - fixtures
from tests.observability.conftest import observed, span_exporter, spans  # noqa: F401 - fixtures

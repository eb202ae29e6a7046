"""The auth and rate_limit config sections: new keys, the seed's keys, and errors that name the key."""

from __future__ import annotations

import pytest

from gateway_project.config import ConfigError, parse_config


def test_defaults_keep_the_seed_keys_meaningful():
    config = parse_config({"rate_limit": {"enabled": True, "requests_per_second": 2}})
    assert config.rate_limit.rpm == 120 and config.rate_limit.tokens_per_minute is None
    assert parse_config({"rate_limit": {"requests_per_minute": 7, "burst": 3}}).rate_limit.rpm == 7
    assert config.rate_limit.fail_open is True and config.auth.enabled is False


def test_durations_and_audience_lists():
    auth = parse_config({"auth": {"leeway": "2m", "jwks_cache_ttl": "1h", "audience": ["a", "b"]}}).auth
    assert (auth.leeway, auth.jwks_cache_ttl, auth.audience) == (120, 3600, ["a", "b"])
    assert parse_config({"rate_limit": {"redis_timeout": "250ms"}}).rate_limit.redis_timeout == 0.25


@pytest.mark.parametrize(("data", "message"), [
    ({"rate_limit": {"trusted_proxies": ["10.0.0.0/8", "bogus"]}}, "rate_limit.trusted_proxies: 'bogus' is not"),
    ({"auth": {"metrics": {"allowed_networks": ["x"]}}}, "auth.metrics.allowed_networks: 'x' is not"),
    ({"rate_limit": {"requests_per_minute": 0}}, "rate_limit.requests_per_minute"),
    ({"auth": {"owner": "sub"}}, "auth.owner: unknown key"),
])
def test_bad_values_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_config(data)

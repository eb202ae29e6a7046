"""Fixtures for identity and rate-limit tests: gateways with auth/limits on, keys, clients, Redis."""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
import redis
from django.test import Client

from gateway_project.config import GatewayConfig
from identity_app.keys import IssuedKey, issue_key
from tests.conftest import gateway_config_for
from tests.fakes.openai_upstream import FakeOpenAI

if TYPE_CHECKING:
    # The test client's response type, which exists only in django-stubs.
    from django.test.client import _MonkeyPatchedWSGIResponse

SHARED_REDIS = "redis://127.0.0.1:6379/0"


class GatewayClient:
    """A Django test client that sends one bearer credential (or none) on every request."""

    def __init__(self, token: str | None = None, **environ: Any) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = Client(headers=headers, **environ)

    def create(self, headers: dict[str, str] | None = None, **body: Any) -> _MonkeyPatchedWSGIResponse:
        return self.client.post("/v1/responses", data=json.dumps(body), content_type="application/json",
                                headers=headers or {})

    def get(self, path: str, headers: dict[str, str] | None = None, **params: Any) -> _MonkeyPatchedWSGIResponse:
        return self.client.get(path, params, headers=headers or {})

    def delete(self, path: str) -> _MonkeyPatchedWSGIResponse:
        return self.client.delete(path)


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own on the shared Redis, removed afterwards."""
    prefix = f"test:idn:{secrets.token_hex(4)}:"
    yield prefix
    client = redis.Redis.from_url(SHARED_REDIS)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def configure(settings: Any, fake_openai: FakeOpenAI) -> Callable[..., GatewayConfig]:
    """Install a gateway config; clients built afterwards load middleware with it."""

    def apply(**sections: Any) -> GatewayConfig:
        settings.GATEWAY = gateway_config_for(fake_openai.url, **sections)
        return settings.GATEWAY

    return apply


@pytest.fixture
def make_key(db: None) -> Callable[..., IssuedKey]:
    def make(owner: str = "acme", **kwargs: Any) -> IssuedKey:
        return issue_key(name=kwargs.pop("name", f"key-{secrets.token_hex(2)}"), owner=owner, **kwargs)

    return make


@pytest.fixture
def tenants(configure: Callable[..., GatewayConfig], make_key: Callable[..., IssuedKey]) -> dict[str, GatewayClient]:
    """Auth on; two keys of owner `acme` (alice, alice2) and one of `globex` (bob)."""
    configure(auth={"enabled": True})
    return {
        "alice": GatewayClient(make_key(owner="acme", name="alice").key),
        "alice2": GatewayClient(make_key(owner="acme", name="alice-second-key").key),
        "bob": GatewayClient(make_key(owner="globex", name="bob").key),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateRedis:
    """A redis-server of this test's own, so it can be stopped without touching the shared one."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis().start()
    yield server
    server.stop()

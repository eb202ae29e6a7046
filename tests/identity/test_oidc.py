"""OIDC bearer tokens against a real issuer on loopback serving discovery and a JWKS."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.fakes.server import FakeServer, Recorded, Writer
from tests.identity.conftest import GatewayClient
from tests.identity.test_auth import UNAUTHORIZED

pytestmark = pytest.mark.django_db

AUDIENCE = "llm-gateway"


class FakeIssuer(FakeServer):
    """Discovery at /.well-known/openid-configuration, keys at /jwks; the key set can change mid-test."""

    name = "issuer"

    def __init__(self) -> None:
        super().__init__()
        self.jwks: list[dict[str, Any]] = []

    @property
    def issuer(self) -> str:
        return self.url

    def handle(self, recorded: Recorded, step: Any, writer: Writer) -> None:
        if recorded.path == "/.well-known/openid-configuration":
            writer.json(200, {"issuer": self.issuer, "jwks_uri": f"{self.url}/jwks"})
        elif recorded.path == "/jwks":
            writer.json(200, {"keys": list(self.jwks)})
        else:
            writer.json(404, {"error": "not found"})

    def publish(self, kid: str, private_key: Any, alg: str) -> None:
        algorithm = RSAAlgorithm if alg.startswith("RS") else ECAlgorithm
        jwk = json.loads(algorithm.to_jwk(private_key.public_key()))
        self.jwks.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})

    def fetches(self, path: str) -> int:
        return sum(1 for r in self.requests if r.path == path)


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def issuer(rsa_key, ec_key):
    server = FakeIssuer()
    server.publish("rsa-1", rsa_key, "RS256")
    server.publish("ec-1", ec_key, "ES256")
    yield server
    server.close()


@pytest.fixture
def oidc_gateway(configure, issuer):
    return configure(auth={"enabled": True, "issuer": issuer.issuer, "audience": [AUDIENCE, "other-aud"],
                           "leeway": 30, "jwks_refresh_cooldown": 0})


def claims(issuer: FakeIssuer, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": issuer.issuer, "aud": AUDIENCE, "sub": "user-1", "iat": now, "exp": now + 300, **overrides}


def token(key: Any, alg: str, kid: str, payload: dict[str, Any]) -> str:
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


@pytest.fixture
def served(oidc_gateway):
    """One client (one middleware chain, one verifier and its caches), a token per request."""
    client = GatewayClient()

    def check(tok: str) -> bool:
        return _served(client, tok)

    return check


def _served(client: GatewayClient, tok: str) -> bool:
    response = client.get("/v1/models", headers={"Authorization": f"Bearer {tok}"})
    if response.status_code == 401:
        assert response.json() == UNAUTHORIZED  # never a hint of why
        return False
    assert response.status_code == 200, response.content
    return True


def test_valid_rs256_and_es256_tokens_are_accepted(served, issuer, rsa_key, ec_key):
    assert served(token(rsa_key, "RS256", "rsa-1", claims(issuer)))
    assert served(token(ec_key, "ES256", "ec-1", claims(issuer)))
    # An audience list in the token needs to contain one of ours.
    assert served(token(rsa_key, "RS256", "rsa-1", claims(issuer, aud=["someone-else", "other-aud"])))
    # Discovery and JWKS were fetched once and cached.
    assert issuer.fetches("/.well-known/openid-configuration") == 1 and issuer.fetches("/jwks") == 1


def test_clock_skew_within_leeway_is_tolerated(served, issuer, rsa_key):
    now = int(time.time())
    assert served(token(rsa_key, "RS256", "rsa-1", claims(issuer, exp=now - 10)))
    assert served(token(rsa_key, "RS256", "rsa-1", claims(issuer, nbf=now + 10, iat=now + 10)))
    assert not served(token(rsa_key, "RS256", "rsa-1", claims(issuer, exp=now - 120)))


def _tampered(tok: str) -> str:
    header, payload, signature = tok.split(".")
    body = json.loads(jwt.utils.base64url_decode(payload))
    body["sub"] = "admin"
    forged = jwt.utils.base64url_encode(json.dumps(body).encode()).decode()
    return f"{header}.{forged}.{signature}"


def test_bad_tokens_are_all_401(served, issuer, rsa_key, ec_key):
    now = int(time.time())
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bad = {
        "expired": token(rsa_key, "RS256", "rsa-1", claims(issuer, exp=now - 3600, iat=now - 7200)),
        "wrong issuer": token(rsa_key, "RS256", "rsa-1", claims(issuer, iss="https://evil.example")),
        "wrong audience": token(rsa_key, "RS256", "rsa-1", claims(issuer, aud="someone-else")),
        "no audience": token(rsa_key, "RS256", "rsa-1", {k: v for k, v in claims(issuer).items() if k != "aud"}),
        "no exp": token(rsa_key, "RS256", "rsa-1", {k: v for k, v in claims(issuer).items() if k != "exp"}),
        "unknown kid": token(stranger, "RS256", "rsa-9", claims(issuer)),
        "known kid, other key": token(stranger, "RS256", "rsa-1", claims(issuer)),
        "alg none": jwt.encode(claims(issuer), "", algorithm="none", headers={"kid": "rsa-1"}),
        "hs256 with the public key as secret": token(b"x" * 32, "HS256", "rsa-1", claims(issuer)),
        "es256 header on the rsa kid": token(ec_key, "ES256", "rsa-1", claims(issuer)),
        "no kid": jwt.encode(claims(issuer), rsa_key, algorithm="RS256"),
        "tampered signature": token(rsa_key, "RS256", "rsa-1", claims(issuer))[:-4] + "AAAA",
        "tampered payload": _tampered(token(rsa_key, "RS256", "rsa-1", claims(issuer))),
        "no sub": token(rsa_key, "RS256", "rsa-1", {k: v for k, v in claims(issuer).items() if k != "sub"}),
    }
    accepted = [name for name, tok in bad.items() if served(tok)]
    assert accepted == []


def test_an_unknown_kid_refreshes_the_key_set(served, issuer, rsa_key):
    assert served(token(rsa_key, "RS256", "rsa-1", claims(issuer)))
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issuer.publish("rsa-2", rotated, "RS256")
    assert served(token(rotated, "RS256", "rsa-2", claims(issuer)))
    assert issuer.fetches("/jwks") == 2


def test_oidc_identities_own_their_responses_apart_from_keys(oidc_gateway, issuer, rsa_key, make_key):
    alice = GatewayClient(token(rsa_key, "RS256", "rsa-1", claims(issuer, sub="alice")))
    bob = GatewayClient(token(rsa_key, "RS256", "rsa-1", claims(issuer, sub="bob")))
    created = alice.create(model="demo", input="hi")
    assert created.status_code == 200
    rid = created.json()["id"]
    assert alice.get(f"/v1/responses/{rid}").status_code == 200
    assert bob.get(f"/v1/responses/{rid}").status_code == 404
    # A key whose owner label is "alice" is not the OIDC user alice.
    assert GatewayClient(make_key(owner="alice").key).get(f"/v1/responses/{rid}").status_code == 404


def test_issuer_down_is_503_not_a_bad_token(configure, rsa_key):
    from tests.identity.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}"
    configure(auth={"enabled": True, "issuer": url, "audience": AUDIENCE, "http_timeout": 1})
    now = int(time.time())
    tok = token(rsa_key, "RS256", "rsa-1", {"iss": url, "aud": AUDIENCE, "sub": "u", "exp": now + 60})
    response = GatewayClient(tok).get("/v1/models")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "auth_unavailable"

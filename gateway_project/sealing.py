"""Sealing: authenticated encryption of what the gateway hands to a client to bring back later
(the `encrypted_content` of its compaction items, responses_app/compaction.py).

Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`) under a `MultiFernet` of the keys in
`GATEWAY_COMPACTION_KEYS`: the first key seals, every key opens, so a key is rotated by listing the
new one first and the old one after it until what it sealed is no longer needed. Without keys the
gateway derives one from Django's `SECRET_KEY` with HKDF-SHA256 (so a deployment that sets a real
`SECRET_KEY` works out of the box, and every worker and instance sharing it opens what the others
sealed).

A sealed value is bound to its owner (the tenant, '' when auth is off): the owner is inside the
authenticated plaintext and must match when it is opened, so one tenant's value is refused to
another exactly as a tampered one or one sealed under a key no longer listed is.

Sealed values start with `PREFIX`, which tells them apart from upstreams' own opaque values
(OpenAI's compaction items are Fernet tokens too).

`cryptography` is imported when something is first sealed or opened (or keys are checked), not
with this module: its Rust extension and OpenSSL are about 9 MB of each worker's memory, which a
gateway that never compacts would carry for nothing (issue 13). The first compaction of a worker
pays the import once (about 30 ms).
"""

from __future__ import annotations

import base64
import functools
import hmac
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

PREFIX = "gwcmp1."
# HKDF's `info`: a key derived for sealing compaction items is good for nothing else.
_DERIVATION_INFO = b"llm-gateway compaction sealing key v1"


class Unsealable(ValueError):
    """The value was not sealed by this gateway for this owner under a key it still has, or was altered."""


def check_keys(keys: list[str]) -> None:
    """Raise ValueError naming the first key that is not a Fernet key (settings refuse to start)."""
    if not keys:
        return
    from cryptography.fernet import Fernet

    for number, key in enumerate(keys, start=1):
        try:
            Fernet(key.encode())
        except ValueError:
            raise ValueError(f"key {number} is not a Fernet key (32 url-safe base64-encoded bytes; "
                             "make one with `python -c 'from cryptography.fernet import Fernet; "
                             "print(Fernet.generate_key().decode())'`)") from None


def derived_key(secret_key: str) -> bytes:
    """The Fernet key used when no keys are configured: HKDF-SHA256 of Django's SECRET_KEY."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_DERIVATION_INFO).derive(secret_key.encode())
    return base64.urlsafe_b64encode(raw)


@functools.cache
def _fernet(keys: tuple[str, ...], secret_key: str) -> MultiFernet:
    from cryptography.fernet import Fernet, MultiFernet

    if not keys:
        return MultiFernet([Fernet(derived_key(secret_key))])
    return MultiFernet([Fernet(key.encode()) for key in keys])


def _current() -> MultiFernet:
    from django.conf import settings

    return _fernet(tuple(settings.GATEWAY_COMPACTION_KEYS), settings.SECRET_KEY)


def is_sealed(value: Any) -> bool:
    """Whether `value` claims to be sealed by this gateway (it may still fail to open)."""
    return isinstance(value, str) and value.startswith(PREFIX)


def seal(payload: dict[str, Any], owner: str) -> str:
    body = json.dumps({"owner": owner, "payload": payload}, separators=(",", ":"), ensure_ascii=False)
    return PREFIX + _current().encrypt(body.encode()).decode()


def unseal(value: str, owner: str) -> dict[str, Any]:
    """The payload sealed for `owner`; Unsealable otherwise."""
    from cryptography.fernet import InvalidToken

    if not is_sealed(value):
        raise Unsealable("not sealed by this gateway")
    token = value.removeprefix(PREFIX).encode()
    try:
        # Fernet's base64 decoding ignores what follows the padding; a token must be exactly as sealed.
        if base64.urlsafe_b64encode(base64.urlsafe_b64decode(token)) != token:
            raise ValueError("not canonical base64")
        body = json.loads(_current().decrypt(token))
    except (InvalidToken, ValueError):
        raise Unsealable("altered, or sealed under a key this gateway does not have") from None
    sealed_for = body.get("owner") if isinstance(body, dict) else None
    if not isinstance(sealed_for, str) or not hmac.compare_digest(sealed_for.encode(), owner.encode()):
        # Said exactly as for an unknown key: the answer must not tell a tenant that another exists.
        raise Unsealable("altered, or sealed under a key this gateway does not have")
    payload = body.get("payload")
    if not isinstance(payload, dict):
        raise Unsealable("malformed")
    return payload

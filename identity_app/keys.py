"""Issuing and checking gateway API keys.

A key is `gwk_<8 visible chars>_<43 random chars>`: 256 bits of entropy, so a plain SHA-256 is
enough (no slow KDF needed: there is nothing to brute-force). Lookup is by hash, and the hash
found is compared again in constant time so timing says nothing about near misses.
Revocation works at once on every worker because nothing is cached: each request reads its row.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from identity_app.models import ApiKey

KEY_PREFIX = "gwk_"
# last_used_at is a hint for operators; writing it once a minute at most keeps requests read-only.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class IssuedKey:
    key: str  # the only time the full key exists outside the client
    record: ApiKey


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """(full key, visible prefix)."""
    visible = secrets.token_hex(4)
    return f"{KEY_PREFIX}{visible}_{secrets.token_urlsafe(32)}", f"{KEY_PREFIX}{visible}"


def looks_like_api_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)


def assign_new_key(record: ApiKey) -> str:
    key, record.prefix = new_key()
    record.key_hash = hash_key(key)
    return key


def issue_key(*, name: str, owner: str, allowed_models: list[str] | None = None,
              rpm: int | None = None, tpm: int | None = None) -> IssuedKey:
    record = ApiKey(name=name, owner=owner, allowed_models=allowed_models or [], rpm=rpm, tpm=tpm)
    key = assign_new_key(record)
    record.full_clean()
    record.save()
    return IssuedKey(key=key, record=record)


def find_active_key(key: str) -> ApiKey | None:
    if not looks_like_api_key(key) or len(key) > 128:
        return None
    digest = hash_key(key)
    record = ApiKey.objects.filter(key_hash=digest, revoked_at__isnull=True).first()
    if record is None or not hmac.compare_digest(record.key_hash, digest):
        return None
    _touch(record)
    return record


def _touch(record: ApiKey) -> None:
    now = timezone.now()
    if record.last_used_at is None or now - record.last_used_at >= LAST_USED_RESOLUTION:
        # Conditional update: of several workers racing in the same minute, the row is written once.
        stale = now - LAST_USED_RESOLUTION
        ApiKey.objects.filter(Q(last_used_at__isnull=True) | Q(last_used_at__lte=stale), pk=record.pk).update(
            last_used_at=now)


def revoke(record: ApiKey) -> None:
    ApiKey.objects.filter(pk=record.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())

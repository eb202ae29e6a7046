"""Issuing and checking gateway API keys.

A key is `gwk_<8 visible chars>_<43 random chars>`: 256 bits of entropy, so a plain SHA-256 is
enough (no slow KDF needed: there is nothing to brute-force). Lookup is by hash, and the hash
found is compared again in constant time so timing says nothing about near misses.
Active keys are remembered per process (identity_app.key_cache), and forgotten by every worker the
moment any key is revoked or changed, so revocation still works at once everywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from identity_app.key_cache import KeyCache, forget_keys, key_cache
from identity_app.models import ApiKey

logger = logging.getLogger(__name__)

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


# The lookup of a key not remembered, as one constant statement (key_hash is unique, so there is
# at most one row). The ORM built and compiled the same query on each request, about 0.5 ms of CPU
# of the ~0.9 ms the lookup cost (issue 13); the row still becomes an ApiKey through the model's
# own converters (RawQuerySet).
# Its columns named: a prepared `SELECT *` (server-side binding) fails once a migration adds one.
_ACTIVE_KEY_SQL = (f"SELECT {', '.join(field.column for field in ApiKey._meta.concrete_fields)} "  # noqa: S608
                   f"FROM {ApiKey._meta.db_table} WHERE key_hash = %s AND revoked_at IS NULL")


def find_active_key(key: str) -> ApiKey | None:
    if not looks_like_api_key(key) or len(key) > 128:
        return None
    digest = hash_key(key)
    cache = key_cache()
    if cache is None:
        return _read_active_key(digest, None)
    if (record := cache.get(digest)) is not None:
        _touch(record)
        return record
    record = _shared_reads.read(digest, lambda: _read_active_key(digest, cache))
    if record is not None:
        _touch(record)  # the read's own touch already wrote it: this only checks the time
    return record


def _read_active_key(digest: str, cache: KeyCache | None) -> ApiKey | None:
    generation = cache.generation() if cache is not None else 0
    record = next(iter(ApiKey.objects.raw(_ACTIVE_KEY_SQL, [digest])), None)
    if record is None or not hmac.compare_digest(record.key_hash, digest):
        return None
    _touch(record)
    if cache is not None:
        cache.remember(digest, record, generation)
    return record


class _SharedReads:
    """Concurrent lookups of one key in a process share one read of its row.

    A burst of requests with one key (a client's fan-out, or any traffic once the cache is cold:
    a worker's start, a change to any key, the TTL running out) otherwise reads the same row once
    per request, each on a pooled connection of its own: under 1,000 streams opened at once that
    was about half of the checkouts the pool had to serve, and requests ran out of
    DB_POOL_BUSY_TIMEOUT (503) waiting behind them. A request that arrives while the row is being
    read waits for that read: the answer it gets was read after it arrived or moments before, which
    is what reading it itself concurrently would give (a revocation is seen by the next lookup, as
    docs/identity.md states). If the read fails, each waiter reads on its own, and fails or not
    with its own error. Only where keys are remembered (Postgres with a TTL): `auth.key_cache_ttl: 0`
    keeps one read per request, as documented."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reads: dict[str, _Read] = {}

    def read(self, digest: str, read: Callable[[], ApiKey | None]) -> ApiKey | None:
        with self._lock:
            pending = self._reads.get(digest)
            if pending is None:
                pending = self._reads[digest] = _Read()
                leading = True
            else:
                leading = False
        if not leading:
            pending.done.wait()
            return pending.record if pending.succeeded else read()
        try:
            pending.record = read()
            pending.succeeded = True
        finally:
            with self._lock:
                del self._reads[digest]
            pending.done.set()
        return pending.record


@dataclass
class _Read:
    done: threading.Event = field(default_factory=threading.Event)
    record: ApiKey | None = None
    succeeded: bool = False


_shared_reads = _SharedReads()


def _touch(record: ApiKey) -> None:
    now = timezone.now()
    if record.last_used_at is None or now - record.last_used_at >= LAST_USED_RESOLUTION:
        # Conditional update: of several workers racing in the same minute, the row is written once.
        stale = now - LAST_USED_RESOLUTION
        ApiKey.objects.filter(Q(last_used_at__isnull=True) | Q(last_used_at__lte=stale), pk=record.pk).update(
            last_used_at=now)
        # A remembered record is not read again: it carries the time written, or it would write each time.
        record.last_used_at = now


def revoke(record: ApiKey) -> bool:
    """Revoke one key now; False when it was already revoked (revoking is idempotent)."""
    return bool(revoke_keys([record]))


def revoke_keys(records: Iterable[ApiKey]) -> list[ApiKey]:
    """Revoke these keys now and return those that were still active, with revoked_at set.

    The one way keys are revoked, from the admin and from `manage.py revoke_api_key` alike: the
    row's revoked_at is set, and every worker and instance refuses the key on its next request:
    the commit notifies every process that remembers keys (identity_app.key_cache), and this one
    forgets at once. Three queries however many keys: the active ones are locked, so of two
    concurrent revocations one reports each key.
    """
    wanted = {record.pk: record for record in records}
    now = timezone.now()
    with transaction.atomic():
        active = list(ApiKey.objects.select_for_update().filter(pk__in=wanted, revoked_at__isnull=True)
                      .values_list("pk", flat=True))
        if active:
            ApiKey.objects.filter(pk__in=active).update(revoked_at=now)
            forget_keys()
    for pk in active:
        record = wanted[pk]
        record.revoked_at = now
        logger.info("API key %s (id %s, owner %r) revoked", record.prefix, record.pk, record.owner)
    return [wanted[pk] for pk in active]


def find_key(reference: str) -> ApiKey | None:
    """A key, revoked or not, by its id (`12`), its visible prefix (`gwk_1a2b3c4d`) or the full key
    (found by its hash, so a mistyped key finds nothing rather than the key its prefix names)."""
    reference = reference.strip()
    if reference.isdigit():
        return ApiKey.objects.filter(pk=int(reference)).first()
    if not looks_like_api_key(reference):
        return None
    if len(reference) > len(KEY_PREFIX) + 8:
        return ApiKey.objects.filter(key_hash=hash_key(reference)).first()
    return ApiKey.objects.filter(prefix=reference).first()


def config_warnings(allowed_models: list[str], *, has_limits: bool) -> list[str]:
    """What an operator creating or editing a key should know about the gateway's config: models
    it does not serve, auth switched off (keys are not asked for), limits switched off."""
    found = []
    if unknown := unknown_models(allowed_models):
        served = ", ".join(m.name for m in settings.GATEWAY.models) or "none"
        them = "it" if len(unknown) == 1 else "them"
        found.append(f"Not a configured model: {', '.join(unknown)} (configured: {served}); the key cannot use "
                     f"{them} until the config serves {them}.")
    if not settings.GATEWAY.auth.enabled:
        found.append("Auth is off in the config (auth.enabled: false): the gateway asks for no key, so this one "
                     "is not checked until auth is switched on.")
    if has_limits and not settings.GATEWAY.rate_limit.enabled:
        found.append("Rate limits are off in the config (rate_limit.enabled: false): the key's rpm and tpm are not "
                     "enforced.")
    return found


def unknown_models(names: list[str]) -> list[str]:
    """The names in a key's allow-list that the configured models (names and aliases) do not know.
    Only a warning: the config may gain them later, and until then the key cannot use them."""
    return [name for name in names if settings.GATEWAY.model(name) is None]

"""Token buckets for requests and tokens per minute, decided atomically.

Each identity has two buckets holding up to one minute's allowance (`rpm` requests, `tpm`
tokens) and refilling continuously at limit/60 per second, as OpenAI describes its own limits.
A request is admitted only if both buckets hold its cost; then both are charged together.
The token cost is a reservation (input estimate + max output), reconciled with the real usage
when the response ends, so a bucket can go negative (debt) after an under-estimate.

With Redis, one Lua script per decision reads Redis's clock (TIME), so workers and instances
with skewed clocks still share one exact state. Without Redis (REDIS_URL empty) the same
arithmetic runs in process memory: exact for one process, but each worker then has its own
buckets (limits multiply by the worker count).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

import redis

from gateway_project import redis_clients
from gateway_project.observability import metrics

logger = logging.getLogger(__name__)

WINDOW_US = 60_000_000  # a bucket refills completely in one minute

# KEYS: requests bucket, tokens bucket. ARGV: rpm, tpm (0 = no limit), request cost, token cost.
# Returns: admitted (0/1), refusing scope (0 none, 1 requests, 2 tokens), wait in us, request level,
# token level, token cost charged, Redis time in us. Floats travel as strings (Redis truncates numbers).
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local WINDOW = 60000000
local function level(key, cap)
  local v = redis.call('HMGET', key, 'level', 'ts')
  local l, ts = tonumber(v[1]), tonumber(v[2])
  if l == nil or ts == nil then return cap end
  local refill = math.max(0, now - ts) * cap / WINDOW
  return math.min(cap, l + refill)
end
local function store(key, cap, l)
  redis.call('HSET', key, 'level', string.format('%.6f', l), 'ts', string.format('%.0f', now))
  redis.call('PEXPIRE', key, math.ceil((cap - l) * WINDOW / cap / 1000) + 1000)
end
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local rcost, tcost = tonumber(ARGV[3]), tonumber(ARGV[4])
local rl, tl, wait, scope = -1, -1, 0, 0
if rpm > 0 then
  rl = level(KEYS[1], rpm)
  if rl < rcost then wait = (rcost - rl) * WINDOW / rpm; scope = 1 end
end
if tpm > 0 then
  if tcost > tpm then tcost = tpm end
  tl = level(KEYS[2], tpm)
  if tl < tcost then
    local w = (tcost - tl) * WINDOW / tpm
    if w > wait then wait = w; scope = 2 end
  end
end
if scope ~= 0 then
  return {0, scope, string.format('%.0f', math.ceil(wait)), tostring(rl), tostring(tl), 0, string.format('%.0f', now)}
end
if rpm > 0 then rl = rl - rcost; store(KEYS[1], rpm, rl) end
if tpm > 0 then tl = tl - tcost; store(KEYS[2], tpm, tl) else tcost = 0 end
return {1, 0, '0', tostring(rl), tostring(tl), tcost, string.format('%.0f', now)}
"""

# KEYS: tokens bucket. ARGV: tpm, delta (reserved - used: positive gives tokens back).
_RECONCILE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local WINDOW = 60000000
local cap, delta = tonumber(ARGV[1]), tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 'level', 'ts')
local l, ts = tonumber(v[1]), tonumber(v[2])
if l == nil or ts == nil then l = cap else l = math.min(cap, l + math.max(0, now - ts) * cap / WINDOW) end
l = math.min(cap, l + delta)
redis.call('HSET', KEYS[1], 'level', string.format('%.6f', l), 'ts', string.format('%.0f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil((cap - l) * WINDOW / cap / 1000) + 1000)
return tostring(l)
"""


class BackendUnavailable(Exception):
    """Redis could not be asked; the caller applies fail_open / fail_closed."""


@dataclass(frozen=True)
class Limits:
    rpm: int | None
    tpm: int | None


@dataclass(frozen=True)
class BucketState:
    limit: int
    level: float  # allowance left now (negative: debt after an under-estimate)

    @property
    def remaining(self) -> int:
        return max(0, math.floor(self.level + 1e-9))

    @property
    def reset_seconds(self) -> float:
        """Time until the bucket is full again."""
        return max(0.0, (self.limit - self.level) * 60 / self.limit)


@dataclass(frozen=True)
class Decision:
    admitted: bool
    scope: str | None  # "requests" | "tokens" when refused
    retry_after: float  # seconds until this request would be admitted (0 when admitted)
    requests: BucketState | None
    tokens: BucketState | None
    reserved_tokens: int  # charged to the tokens bucket, to reconcile later


def _decision(admitted: int, scope: int, wait_us: float, rl: float, tl: float, charged: int,
              limits: Limits) -> Decision:
    return Decision(
        admitted=bool(admitted), scope={0: None, 1: "requests", 2: "tokens"}[scope], retry_after=wait_us / 1e6,
        requests=BucketState(limits.rpm, rl) if limits.rpm else None,
        tokens=BucketState(limits.tpm, tl) if limits.tpm else None,
        reserved_tokens=charged,
    )


class RedisBuckets:
    def __init__(self, url: str, *, prefix: str, timeout: float) -> None:
        self.client = redis_clients.client(url, socket_timeout=timeout)
        self.prefix = prefix
        self._acquire = self.client.register_script(_ACQUIRE)
        self._reconcile = self.client.register_script(_RECONCILE)

    def keys(self, subject: str) -> tuple[str, str]:
        # The hash tag keeps both buckets in one slot, so the script also runs on Redis Cluster.
        return f"{self.prefix}{{{subject}}}:requests", f"{self.prefix}{{{subject}}}:tokens"

    def acquire(self, subject: str, limits: Limits, *, requests: int, tokens: int) -> Decision:
        try:
            raw = self._acquire(keys=list(self.keys(subject)),
                                args=[limits.rpm or 0, limits.tpm or 0, requests, tokens])
        except redis.RedisError as exc:
            raise BackendUnavailable(str(exc)) from None
        admitted, scope, wait, rl, tl, charged, _now = raw
        return _decision(int(admitted), int(scope), float(wait), float(rl), float(tl), int(charged), limits)

    def reconcile(self, subject: str, tpm: int, delta: int) -> None:
        try:
            self._reconcile(keys=[self.keys(subject)[1]], args=[tpm, delta])
        except redis.RedisError as exc:
            raise BackendUnavailable(str(exc)) from None


class LocalBuckets:
    """The same buckets in this process's memory: the documented fallback when REDIS_URL is empty."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[str, tuple[float, float]] = {}  # key -> (level, monotonic seconds)

    def _level(self, key: str, cap: int, now: float) -> float:
        level, at = self._state.get(key, (cap, now))
        return min(cap, level + max(0.0, now - at) * cap / 60)

    def acquire(self, subject: str, limits: Limits, *, requests: int, tokens: int) -> Decision:
        with self._lock:
            now = time.monotonic()
            rl = self._level(f"{subject}:r", limits.rpm, now) if limits.rpm else -1.0
            tokens = min(tokens, limits.tpm) if limits.tpm else 0
            tl = self._level(f"{subject}:t", limits.tpm, now) if limits.tpm else -1.0
            wait, scope = 0.0, 0
            if limits.rpm and rl < requests:
                wait, scope = (requests - rl) * WINDOW_US / limits.rpm, 1
            if limits.tpm and tl < tokens and (w := (tokens - tl) * WINDOW_US / limits.tpm) > wait:
                wait, scope = w, 2
            if scope:
                return _decision(0, scope, math.ceil(wait), rl, tl, 0, limits)
            if limits.rpm:
                rl -= requests
                self._state[f"{subject}:r"] = (rl, now)
            if limits.tpm:
                tl -= tokens
                self._state[f"{subject}:t"] = (tl, now)
            return _decision(1, 0, 0, rl, tl, tokens, limits)

    def reconcile(self, subject: str, tpm: int, delta: int) -> None:
        with self._lock:
            now = time.monotonic()
            key = f"{subject}:t"
            self._state[key] = (min(tpm, self._level(key, tpm, now) + delta), now)


class Limiter:
    """Buckets plus the failure policy: one log line per Redis incident, a metric per decision lost."""

    def __init__(self, buckets: RedisBuckets | LocalBuckets, *, fail_open: bool) -> None:
        self.buckets = buckets
        self.fail_open = fail_open
        self._down = False

    def acquire(self, subject: str, limits: Limits, *, tokens: int) -> Decision | None:
        """The decision, or None when Redis is unavailable and the policy is to fail open."""
        started = time.perf_counter()
        try:
            decision = self.buckets.acquire(subject, limits, requests=1, tokens=tokens)
        except BackendUnavailable as exc:
            self._incident(exc)
            metrics.rate_limit_backend_errors_total.labels("fail_open" if self.fail_open else "fail_closed").inc()
            if self.fail_open:
                return None
            raise
        finally:
            metrics.rate_limit_decision_seconds.observe(time.perf_counter() - started)
        if self._down:
            self._down = False
            logger.warning("rate limit: Redis is reachable again; limits are enforced")
        return decision

    def reconcile(self, subject: str, tpm: int, delta: int) -> None:
        if delta == 0:
            return
        try:
            self.buckets.reconcile(subject, tpm, delta)
        except BackendUnavailable as exc:
            self._incident(exc)

    def _incident(self, exc: Exception) -> None:
        if not self._down:
            self._down = True
            policy = "admitting requests unlimited (fail_open)" if self.fail_open else "refusing requests (fail_closed)"
            logger.error("rate limit: Redis unavailable (%s); %s until it is back", exc, policy)


def build_limiter(redis_url: str, *, prefix: str, timeout: float, fail_open: bool) -> Limiter:
    buckets: RedisBuckets | LocalBuckets
    if redis_url:
        buckets = RedisBuckets(redis_url, prefix=prefix, timeout=timeout)
    else:
        logger.warning("rate limit: REDIS_URL is empty; buckets are per process (limits multiply by workers)")
        buckets = LocalBuckets()
    return Limiter(buckets, fail_open=fail_open)

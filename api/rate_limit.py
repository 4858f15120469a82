"""Rate limits: a token bucket per caller, in this process or shared through Redis.

A caller is its API key (by key id) when API_KEYS is set, else its client address. Each POST
under /api/v1 takes RATE_LIMIT_COSTS[route] tokens (default 1); the bucket holds
RATE_LIMIT_CAPACITY tokens and regains RATE_LIMIT_REFILL_PER_S per second. An empty bucket
answers 429 `rate_limited` with Retry-After. With REDIS_URL every replica takes from the same
bucket (one atomic Lua script, timed by Redis's own clock); when Redis does not answer the
request passes (fail open: the limit protects capacity, it is not access control) and a
warning is logged.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth import CLIENT_STATE_KEY
from api.errors import error_response, request_id_from
from config.settings import Settings
from utils.exceptions import RateLimitedException

logger = logging.getLogger("inpaint.rate_limit")

API_PREFIX = "/api/v1/"
REDIS_KEY_PREFIX = "inpaint:rate:"
# Buckets of at most this many callers stay in memory; a forgotten bucket starts full again.
MAX_MEMORY_BUCKETS = 100_000
REDIS_WARNING_INTERVAL_S = 60.0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: float = 0.0  # until the bucket holds the cost again (when not allowed)


class TokenBuckets(Protocol):
    async def take(self, caller: str, cost: int) -> Decision: ...


def refill(tokens: float, elapsed_s: float, capacity: int, refill_per_s: float) -> float:
    return min(float(capacity), tokens + max(0.0, elapsed_s) * refill_per_s)


def decide(tokens: float, cost: int, refill_per_s: float) -> tuple[Decision, float]:
    """The decision for a bucket holding `tokens`, and the tokens left after it."""
    if tokens >= cost:
        return Decision(True), tokens - cost
    return Decision(False, (cost - tokens) / refill_per_s), tokens


class MemoryBuckets:
    """Buckets in this process: one replica, one worker (each worker has its own)."""

    def __init__(
        self, capacity: int, refill_per_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.capacity = capacity
        self.refill_per_s = refill_per_s
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when

    async def take(self, caller: str, cost: int) -> Decision:
        now = self.clock()
        tokens, then = self._buckets.pop(caller, (float(self.capacity), now))
        tokens = refill(tokens, now - then, self.capacity, self.refill_per_s)
        decision, left = decide(tokens, cost, self.refill_per_s)
        self._buckets[caller] = (left, now)
        while len(self._buckets) > MAX_MEMORY_BUCKETS:
            self._buckets.popitem(last=False)
        return decision


# The same arithmetic as refill() and decide(), run atomically inside Redis. The bucket
# expires once it would be full again, so idle callers cost no memory.
TAKE_SCRIPT = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate * 1000) + 1000)
return {allowed, tostring(wait)}
"""


class RedisBuckets:
    """Buckets in Redis, shared by every process and replica that uses the same database."""

    def __init__(self, url: str, capacity: int, refill_per_s: float) -> None:
        import redis.asyncio as redis

        self.capacity = capacity
        self.refill_per_s = refill_per_s
        self._client = redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._take = self._client.register_script(TAKE_SCRIPT)
        self._warned_at = -math.inf

    async def take(self, caller: str, cost: int) -> Decision:
        try:
            allowed, wait = await self._take(
                keys=[REDIS_KEY_PREFIX + caller], args=[self.capacity, self.refill_per_s, cost]
            )
        except Exception as exc:  # any Redis or network failure: fail open, see module doc
            if time.monotonic() - self._warned_at > REDIS_WARNING_INTERVAL_S:
                self._warned_at = time.monotonic()
                logger.warning("rate limit store unavailable, letting requests pass: %r", exc)
            return Decision(True)
        return Decision(bool(int(allowed)), float(wait))


def make_buckets(settings: Settings) -> TokenBuckets:
    if settings.redis_url:
        return RedisBuckets(
            settings.redis_url, settings.rate_limit_capacity, settings.rate_limit_refill_per_s
        )
    return MemoryBuckets(settings.rate_limit_capacity, settings.rate_limit_refill_per_s)


def caller_of(scope: Scope) -> str:
    """The key id the auth middleware found, else the client address."""
    known = (scope.get("state") or {}).get(CLIENT_STATE_KEY)
    if known:
        return str(known)
    client = scope.get("client")
    return f"ip:{client[0]}" if client else "ip:unknown"


class RateLimit:
    """Takes a POST's cost from its caller's bucket before the request goes further."""

    def __init__(
        self, app: ASGIApp, buckets: TokenBuckets, costs: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.buckets = buckets
        self.costs = dict(costs or {})

    def cost_of(self, path: str) -> int:
        return self.costs.get(path[len(API_PREFIX) :].split("/", 1)[0], 1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not scope["path"].startswith(API_PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        cost = self.cost_of(scope["path"])
        decision = await self.buckets.take(caller_of(scope), cost) if cost else Decision(True)
        if decision.allowed:
            await self.app(scope, receive, send)
            return
        retry_after = max(1, math.ceil(decision.retry_after_s))
        error = RateLimitedException(
            f"rate limit reached: this route costs {cost} token(s); retry in {retry_after} s",
            retry_after,
        )
        response = error_response(error, request_id_from(dict(Headers(scope=scope))))
        response.headers["Retry-After"] = str(retry_after)
        await response(scope, receive, send)

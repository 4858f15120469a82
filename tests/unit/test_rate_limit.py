"""Token buckets (in memory and in a real Redis) and the rate-limit middleware."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest
import redis
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from api.auth import ApiKeyAuth
from api.rate_limit import REDIS_KEY_PREFIX, MemoryBuckets, RateLimit, RedisBuckets
from config.settings import Settings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.anyio
async def test_memory_bucket_empties_then_refills_at_its_rate() -> None:
    clock = FakeClock()
    buckets = MemoryBuckets(capacity=3, refill_per_s=0.5, clock=clock)
    assert [(await buckets.take("a", 1)).allowed for _ in range(3)] == [True, True, True]
    denied = await buckets.take("a", 1)
    assert not denied.allowed
    assert denied.retry_after_s == pytest.approx(2.0)
    assert (await buckets.take("b", 3)).allowed  # another caller has its own bucket
    clock.now += 1.0  # half a token: still short
    assert (await buckets.take("a", 1)).retry_after_s == pytest.approx(1.0)
    clock.now += 1.0
    assert (await buckets.take("a", 1)).allowed
    clock.now += 3600  # never more than the capacity
    assert [(await buckets.take("a", 2)).allowed for _ in range(2)] == [True, False]


@pytest.fixture
def redis_caller(redis_url: str) -> Iterator[str]:
    caller = f"test:{uuid.uuid4().hex}"
    yield caller
    redis.Redis.from_url(redis_url).delete(REDIS_KEY_PREFIX + caller)


@pytest.mark.anyio
async def test_redis_buckets_are_one_limit_for_every_replica(
    redis_url: str, redis_caller: str
) -> None:
    replica_a = RedisBuckets(redis_url, capacity=3, refill_per_s=0.01)
    replica_b = RedisBuckets(redis_url, capacity=3, refill_per_s=0.01)
    assert (await replica_a.take(redis_caller, 1)).allowed
    assert (await replica_b.take(redis_caller, 1)).allowed
    assert not (await replica_b.take(redis_caller, 2)).allowed  # 1 left of 3
    assert (await replica_a.take(redis_caller, 1)).allowed
    denied = await replica_b.take(redis_caller, 1)
    assert not denied.allowed
    assert 0 < denied.retry_after_s <= 100  # 1 token at 0.01 per second
    # An idle bucket does not stay in Redis longer than it takes to fill up again.
    ttl_ms = redis.Redis.from_url(redis_url).pttl(REDIS_KEY_PREFIX + redis_caller)
    assert 0 < ttl_ms <= 301_000


@pytest.mark.anyio
async def test_redis_down_lets_requests_pass_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="inpaint.rate_limit")
    buckets = RedisBuckets("redis://127.0.0.1:1/0", capacity=1, refill_per_s=1)
    assert [(await buckets.take("x", 1)).allowed for _ in range(3)] == [True, True, True]
    warnings = [r for r in caplog.records if "letting requests pass" in r.getMessage()]
    assert len(warnings) == 1  # once a minute, not once a request


async def _ok(_: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def _app() -> Starlette:
    paths = ("/api/v1/segment", "/api/v1/fill", "/api/v1/health")
    return Starlette(routes=[Route(p, _ok, methods=["GET", "POST"]) for p in paths])


def test_middleware_answers_429_with_retry_after_and_charges_route_costs() -> None:
    clock = FakeClock()
    limited = RateLimit(_app(), MemoryBuckets(4, 0.25, clock), costs={"fill": 3})
    with TestClient(limited) as client:
        assert client.post("/api/v1/fill").status_code == 200  # 3 of 4 tokens
        assert client.post("/api/v1/segment").status_code == 200  # the 4th
        assert client.get("/api/v1/health").status_code == 200  # GETs cost nothing
        denied = client.post("/api/v1/segment", headers={"X-Request-ID": "r-429"})
        clock.now += 8  # 2 tokens back: enough for segment, not for fill
        fill = client.post("/api/v1/fill")
        segment = client.post("/api/v1/segment")
    assert denied.status_code == 429
    assert denied.headers["retry-after"] == "4"  # 1 token at 0.25 per second
    body = denied.json()
    assert body["success"] is False
    assert body["request_id"] == "r-429"
    assert body["error"]["code"] == "rate_limited"
    assert (fill.status_code, fill.headers["retry-after"]) == (429, "4")
    assert segment.status_code == 200


def test_unauthenticated_requests_do_not_drain_a_keys_bucket() -> None:
    limited = RateLimit(_app(), MemoryBuckets(1, 0.001, FakeClock()))
    with TestClient(ApiKeyAuth(limited, keys=["the-key"])) as client:
        for _ in range(5):
            assert client.post("/api/v1/segment").status_code == 401
        assert client.post("/api/v1/segment", headers={"X-API-Key": "the-key"}).status_code == 200
        assert client.post("/api/v1/segment", headers={"X-API-Key": "the-key"}).status_code == 429


def test_without_keys_each_client_address_has_its_own_bucket() -> None:
    limited = RateLimit(_app(), MemoryBuckets(1, 0.001, FakeClock()))
    with TestClient(limited, client=("10.0.0.1", 5000)) as first:
        assert first.post("/api/v1/segment").status_code == 200
        assert first.post("/api/v1/segment").status_code == 429
    with TestClient(limited, client=("10.0.0.2", 5000)) as second:
        assert second.post("/api/v1/segment").status_code == 200


def test_a_route_cost_above_the_capacity_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATE_LIMIT_CAPACITY", "4")
    with pytest.raises(ValidationError, match="exceed RATE_LIMIT_CAPACITY"):
        Settings(_env_file=None)  # the default costs fill and replace 5
    monkeypatch.setenv("RATE_LIMIT_COSTS", '{"fill": 4, "replace": 2}')
    assert Settings(_env_file=None).rate_limit_costs == {"fill": 4, "replace": 2}


def test_the_service_gets_observation_then_keys_then_the_limit() -> None:
    from types import SimpleNamespace

    from api.observe import ObserveMiddleware
    from api.production import add_production_middleware

    service = SimpleNamespace(
        apis={"segment": SimpleNamespace(route="/api/v1/segment")},
        middlewares=[],
    )
    service.add_asgi_middleware = lambda cls, **options: service.middlewares.append((cls, options))
    settings = Settings(_env_file=None, api_keys=["k"], rate_limit_capacity=10)
    add_production_middleware(service, settings, extra_routes=["health"])
    classes = [cls for cls, _ in service.middlewares]
    assert classes[0] is ObserveMiddleware and service.middlewares[0][1]["routes"] == [
        "health",
        "segment",
    ]
    assert classes[1] is ApiKeyAuth and issubclass(classes[2], RateLimit)
    service.middlewares.clear()
    add_production_middleware(service, Settings(_env_file=None))  # open, unlimited
    assert [cls for cls, _ in service.middlewares] == [ObserveMiddleware]

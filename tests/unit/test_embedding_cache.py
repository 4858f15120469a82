"""SAM embedding cache: LRU in process, Redis shared; a broken Redis is a miss, not an error."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import redis

from config.settings import Settings
from runners.embedding_cache import (
    LruEmbeddingCache,
    RedisEmbeddingCache,
    embedding_key,
    make_embedding_cache,
)

pytestmark = pytest.mark.anyio


def _embedding(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((256, 64, 64)).astype(np.float32)


def test_key_depends_on_pixels_shape_and_model() -> None:
    image = np.zeros((4, 6, 3), np.uint8)
    key = embedding_key(image, "sam-vit_b:v1")
    assert key == embedding_key(image.copy(), "sam-vit_b:v1")
    assert key != embedding_key(image, "sam-vit_h:v1")
    assert key != embedding_key(image.reshape(6, 4, 3), "sam-vit_b:v1")
    changed = image.copy()
    changed[3, 5, 2] = 1
    assert key != embedding_key(changed, "sam-vit_b:v1")
    # A non-contiguous view hashes its pixels, not its memory layout.
    wide = np.zeros((4, 12, 3), np.uint8)
    assert embedding_key(wide[:, ::2], "m") == embedding_key(np.zeros((4, 6, 3), np.uint8), "m")


async def test_lru_evicts_the_least_recently_used() -> None:
    cache = LruEmbeddingCache(capacity=2)
    a, b, c = _embedding(1), _embedding(2), _embedding(3)
    await cache.put("a", a)
    await cache.put("b", b)
    assert await cache.get("a") is a  # a is now the most recent
    await cache.put("c", c)
    assert await cache.get("b") is None
    assert await cache.get("a") is a and await cache.get("c") is c
    assert len(cache) == 2


async def test_lru_of_size_zero_keeps_nothing() -> None:
    cache = LruEmbeddingCache(capacity=0)
    await cache.put("a", _embedding(1))
    assert await cache.get("a") is None


async def test_redis_round_trip_is_exact_and_has_a_ttl(redis_url: str) -> None:
    cache = RedisEmbeddingCache(redis_url, ttl_s=60)
    key = f"test:{uuid.uuid4().hex}"
    embedding = _embedding(7)
    try:
        assert await cache.get(key) is None
        await cache.put(key, embedding)
        restored = await cache.get(key)
        assert restored is not None and restored.dtype == np.float32
        np.testing.assert_array_equal(restored, embedding)
        assert 0 < redis.Redis.from_url(redis_url).ttl(key) <= 60
    finally:
        redis.Redis.from_url(redis_url).delete(key)
        await cache.close()


async def test_redis_shared_between_two_clients(redis_url: str) -> None:
    """Two replicas (two cache objects) see each other's embeddings."""
    writer, reader = RedisEmbeddingCache(redis_url, 60), RedisEmbeddingCache(redis_url, 60)
    key = f"test:{uuid.uuid4().hex}"
    try:
        await writer.put(key, _embedding(3))
        restored = await reader.get(key)
        assert restored is not None
        np.testing.assert_array_equal(restored, _embedding(3))
    finally:
        redis.Redis.from_url(redis_url).delete(key)
        await writer.close()
        await reader.close()


async def test_unreachable_redis_is_a_miss_not_an_error() -> None:
    cache = RedisEmbeddingCache("redis://127.0.0.1:1/0", ttl_s=60)
    await cache.put("k", _embedding(1))  # logs, does not raise
    assert await cache.get("k") is None
    await cache.close()


def test_factory_picks_redis_only_when_configured() -> None:
    assert isinstance(make_embedding_cache(Settings(redis_url="")), LruEmbeddingCache)
    assert isinstance(
        make_embedding_cache(Settings(redis_url="redis://127.0.0.1:6379/0")), RedisEmbeddingCache
    )

"""SAM embedding cache: a second click on the same photo skips the image encoder.

Keys hash the pixels SAM encodes (the photo at SAM's working size, not the upload bytes)
together with the SAM store tag, so a re-encoded upload of other pixels never hits, and two SAM
models never share entries. `SingleFlight` makes concurrent requests for one key share one
computation, so however many ask at once, the encoder runs once per photo and model.
In-process LRU by default; Redis when REDIS_URL is set, so that replicas share it. A cache
that fails is a miss, never a failed request.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, Protocol, TypeVar

import numpy as np

from config.settings import Settings

logger = logging.getLogger("inpaint.cache")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Flight(Generic[V]):
    def __init__(self, task: asyncio.Task[V]) -> None:
        self.task = task
        self.waiters = 0


class SingleFlight(Generic[K, V]):
    """One computation per key at a time, shared by everyone who asks meanwhile.

    A waiter that gives up (timeout, client gone) leaves the computation to the others; when
    the last one leaves, the computation is cancelled, so nothing runs for nobody.
    """

    def __init__(self) -> None:
        self._flights: dict[K, _Flight[V]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    async def run(self, key: K, compute: Callable[[], Awaitable[V]]) -> tuple[V, bool]:
        """(value, joined): joined is True when another caller's computation answered."""
        flight = self._flights.get(key)
        joined = flight is not None
        if flight is None:
            flight = _Flight(asyncio.ensure_future(compute()))
            self._flights[key] = flight
            flight.task.add_done_callback(lambda _, f=flight: self._land(key, f))
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task), joined
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                flight.task.cancel()

    def _land(self, key: K, flight: _Flight[V]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.task.cancelled():
            flight.task.exception()  # retrieved here: a waiter-less failure is not "unhandled"


def embedding_key(image: np.ndarray, model_tag: str) -> str:
    digest = hashlib.blake2b(digest_size=20)
    digest.update(model_tag.encode())
    digest.update(repr(image.shape).encode())
    digest.update(np.ascontiguousarray(image).data)
    return f"inpaint:sam-embedding:{digest.hexdigest()}"


class EmbeddingCache(Protocol):
    name: str

    async def get(self, key: str) -> np.ndarray | None: ...

    async def put(self, key: str, embedding: np.ndarray) -> None: ...


class LruEmbeddingCache:
    """At most `capacity` embeddings (4 MiB each for SAM) in this process."""

    name = "memory"

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, np.ndarray] = OrderedDict()

    async def get(self, key: str) -> np.ndarray | None:
        embedding = self._entries.get(key)
        if embedding is not None:
            self._entries.move_to_end(key)
        return embedding

    async def put(self, key: str, embedding: np.ndarray) -> None:
        if self.capacity == 0:
            return
        self._entries[key] = embedding
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class RedisEmbeddingCache:
    """Embeddings as `.npy` bytes in Redis with a TTL, shared by every replica."""

    name = "redis"

    def __init__(self, url: str, ttl_s: int) -> None:
        import redis.asyncio as redis

        self.ttl_s = ttl_s
        self._client = redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)

    async def get(self, key: str) -> np.ndarray | None:
        try:
            payload = await self._client.get(key)
        except Exception as exc:
            logger.warning("embedding cache read failed, computing instead: %s", exc)
            return None
        if payload is None:
            return None
        # 4 MB parsed off the event loop, so other requests' clicks do not wait on it.
        return await asyncio.to_thread(np.load, io.BytesIO(payload), allow_pickle=False)

    async def put(self, key: str, embedding: np.ndarray) -> None:
        payload = await asyncio.to_thread(_npy_bytes, embedding)
        try:
            await self._client.set(key, payload, ex=self.ttl_s)
        except Exception as exc:
            logger.warning("embedding cache write failed: %s", exc)

    async def close(self) -> None:
        await self._client.aclose()


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def make_embedding_cache(settings: Settings) -> LruEmbeddingCache | RedisEmbeddingCache:
    if settings.redis_url:
        return RedisEmbeddingCache(settings.redis_url, settings.redis_cache_ttl_s)
    return LruEmbeddingCache(settings.embedding_cache_size)

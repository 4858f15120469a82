"""With REDIS_URL set, the SAM embedding cache lives in Redis, where every replica finds it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

from scripts.local_server import LocalServer, serving
from tests.e2e.conftest import SERVER_ENV
from tests.e2e.helpers import cleared_redis, example_cases, example_path, load_rgb, png_bytes

pytestmark = pytest.mark.e2e
KEYS = "inpaint:sam-embedding:*"


@pytest.fixture(scope="module")
def store(redis_url: str) -> Iterator[redis.Redis]:
    with cleared_redis(redis_url, KEYS) as client:
        yield client


@pytest.fixture(scope="module")
def redis_server(
    store: redis.Redis,
    redis_url: str,
    bentoml_home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LocalServer]:
    log = tmp_path_factory.mktemp("redis-server") / "serve.log"
    # The SAM runner keeps one embedding, so the test can make it forget one.
    env = {**SERVER_ENV, "REDIS_URL": redis_url, "RUNNER_EMBEDDINGS_KEPT": "1"}
    with serving(bentoml_home, log, env) as server:
        yield server


def _segment(client: httpx.Client, photo: np.ndarray) -> dict:
    files = {"image": ("p.png", png_bytes(photo), "image/png")}
    request = {"request": json.dumps({"point_coords": [[600, 450]]})}
    response = client.post("/api/v1/segment", files=files, data=request)
    assert response.status_code == 200, response.text
    return response.json()


def _key_count(store: redis.Redis) -> int:
    return len(store.keys(KEYS))


def test_a_click_asks_redis_only_when_the_runner_lacks_the_embedding(
    store: redis.Redis, redis_server: LocalServer
) -> None:
    dog = load_rgb(example_path(example_cases()["remove-dog"]))
    photo_a = np.ascontiguousarray(dog[:, ::-1])  # pixels no other test sends
    photo_b = np.ascontiguousarray(dog[::-1])
    with httpx.Client(base_url=redis_server.url, timeout=120) as client:
        first = _segment(client, photo_a)
        assert first["metadata"]["embedding_cached"] is False
        [key_a] = store.keys(KEYS)
        assert 0 < store.ttl(key_a) <= 3600
        # Redis forgets A; the runner still holds it, so the click needs neither Redis nor
        # the encoder (which would have stored A again).
        store.delete(key_a)
        again = _segment(client, photo_a)
        assert again["metadata"]["embedding_cached"] is True
        assert again["masks"] == first["masks"]
        assert _key_count(store) == 0
        # B pushes A out of the runner (it keeps one); with A in neither place, the encoder
        # runs again and A is back in Redis.
        first_b = _segment(client, photo_b)
        assert first_b["metadata"]["embedding_cached"] is False
        assert _segment(client, photo_a)["metadata"]["embedding_cached"] is False
        assert _key_count(store) == 2
        # Now the runner holds A only: B's click is served from Redis, as another replica's
        # would be, with B's masks.
        from_redis = _segment(client, photo_b)
    assert from_redis["metadata"]["embedding_cached"] is True
    assert from_redis["masks"] == first_b["masks"]

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
    with serving(bentoml_home, log, {**SERVER_ENV, "REDIS_URL": redis_url}) as server:
        yield server


def test_the_embedding_is_stored_in_redis_and_reused(
    store: redis.Redis, redis_server: LocalServer
) -> None:
    photo = load_rgb(example_path(example_cases()["remove-dog"]))
    photo = np.ascontiguousarray(photo[:, ::-1])  # pixels no other test sends
    request = {"request": json.dumps({"point_coords": [[600, 450]]})}
    files = {"image": ("p.png", png_bytes(photo), "image/png")}
    with httpx.Client(base_url=redis_server.url, timeout=120) as client:
        first = client.post("/api/v1/segment", files=files, data=request).json()
        assert first["metadata"]["embedding_cached"] is False
        keys = store.keys(KEYS)
        assert len(keys) == 1
        assert 0 < store.ttl(keys[0]) <= 3600
        # With REDIS_URL there is no in-process cache: this hit can only come from Redis.
        second = client.post("/api/v1/segment", files=files, data=request).json()
    assert second["metadata"]["embedding_cached"] is True
    assert second["masks"] == first["masks"]

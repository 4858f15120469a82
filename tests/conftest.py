"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Tests never touch the user's own model store (~/bentoml); this runs before bentoml is imported.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="inpaint-tests-bentoml-")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")

REPO_ROOT = Path(__file__).resolve().parent.parent
# Example photos (with Inpaint-Anything's published clicks) and the LaMa layout facts ship with
# the repository, so a plain clone runs every test.
EXAMPLES_DIR = REPO_ROOT / "examples"
LAMA_DATA_DIR = REPO_ROOT / "tests" / "data" / "lama"


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (`pytest.mark.anyio`) run on asyncio, as BentoML does."""
    return "asyncio"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis database for the cache tests: CI must have it (INPAINT_REQUIRE_REDIS=1, set by
    .ci/run); elsewhere the tests skip without it."""
    import redis

    url = os.environ.get("INPAINT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        if os.environ.get("INPAINT_REQUIRE_REDIS") == "1":
            pytest.fail(f"Redis is required here but does not answer at {url}")
        pytest.skip(f"no Redis at {url}")
    return url

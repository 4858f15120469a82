"""Under a burst the server sheds load with our 503 body and stays healthy.

A second server with batching on and a 1 ms latency budget: BentoML's dispatcher refuses every
request that would have to queue, which is how an overloaded SAM runner behaves.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scripts.local_server import LocalServer, serving
from tests.e2e.conftest import SERVER_ENV
from tests.e2e.helpers import example_cases, example_path, load_rgb, png_bytes

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


@pytest.fixture(scope="module")
def strained(bentoml_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    log = tmp_path_factory.mktemp("strained") / "serve.log"
    settings = {**SERVER_ENV, "SAM_MAX_BATCH_SIZE": "4", "BATCH_MAX_LATENCY_MS": "1"}
    with serving(bentoml_home, log, settings) as server:
        yield server


async def test_a_burst_gets_answers_or_overloaded_503s_never_500s(strained: LocalServer) -> None:
    photo = load_rgb(example_path(example_cases()["remove-dog"]))
    # Distinct images, so that every request runs the SAM encoder.
    images = []
    for index in range(8):
        variant = photo.copy()
        variant[0, index, 0] ^= 1
        images.append(png_bytes(variant))
    async with httpx.AsyncClient(base_url=strained.url, timeout=120) as client:

        async def segment(image: bytes) -> httpx.Response:
            return await client.post(
                "/api/v1/segment",
                files={"image": ("p.png", image, "image/png")},
                data={"request": json.dumps({"point_coords": [[200, 450]]})},
            )

        responses = await asyncio.gather(*map(segment, images))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 503}, statuses
    shed = [r.json() for r in responses if r.status_code == 503]
    assert shed, "a 1 ms budget must shed part of a burst of 8"
    for body in shed:
        assert body["success"] is False
        assert body["error"]["code"] == "overloaded", body
    assert httpx.get(f"{strained.url}/api/v1/ready", timeout=30).status_code == 200

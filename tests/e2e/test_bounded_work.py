"""Bounded work through a real `bentoml serve`: geometry limits before any model runs, one
encoder run per photo, deadlines that reach the runners, /ready while the runners are busy."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from scripts.local_server import ServerError, serving
from tests.e2e.conftest import SERVER_ENV, Server
from tests.e2e.helpers import (
    assert_error,
    compute_lock_held,
    png_bytes,
    post,
    wait_for_log,
)

pytestmark = pytest.mark.e2e


def _photo(seed: int, height: int = 96, width: int = 128) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _sam_counts(url: str) -> dict[str, int]:
    details = httpx.get(f"{url}/api/v1/ready", timeout=30).json()["models"]["sam"]["details"]
    names = ("encoder_runs", "images_encoded", "skipped_expired", "skipped_cancelled")
    return {name: details[name] for name in names}


async def _segment_all(url: str, photos: list[bytes], box: list[int]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(photos))
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        return await asyncio.gather(
            *(
                client.post(
                    "/api/v1/segment",
                    files={"image": ("p.png", photo, "image/png")},
                    data={"request": json.dumps({"box": box})},
                )
                for photo in photos
            )
        )


@pytest.mark.parametrize(("width", "height"), [(3000, 1), (20000, 5), (1, 3000)])
def test_thin_strips_get_a_422_not_a_500(server: Server, width: int, height: int) -> None:
    with server.client() as client:
        response = post(
            client, "segment", png_bytes(_photo(1, height, width)), {"point_coords": [[0, 0]]}
        )
    assert_error(response, 422, "validation_error")
    assert "MAX_ASPECT_RATIO" in response.json()["error"]["message"]


def test_a_fill_whose_upscaled_canvas_is_too_big_is_refused_before_any_model(
    server: Server,
) -> None:
    """2000x50 with a mask: fill would scale it to 256x10240 (the SD window is 256)."""
    image, mask = _photo(2, 50, 2000), np.zeros((50, 2000), np.uint8)
    mask[10:30, 100:140] = 255
    with server.client() as client:
        response = post(client, "fill", png_bytes(image), {"text_prompt": "sky"}, png_bytes(mask))
        assert client.get("/api/v1/health").status_code == 200
    assert_error(response, 422, "validation_error")
    assert "MAX_CANVAS_PIXELS" in response.json()["error"]["message"]


def test_a_million_pixel_strip_fill_is_a_quick_422_while_health_answers(server: Server) -> None:
    image = np.zeros((1, 1_000_000, 3), np.uint8)
    mask = np.zeros((1, 1_000_000), np.uint8)
    mask[0, :10] = 255

    async def run() -> tuple[httpx.Response, list[int]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            fill = asyncio.ensure_future(
                client.post(
                    "/api/v1/fill",
                    files={
                        "image": ("s.png", png_bytes(image), "image/png"),
                        "mask": ("m.png", png_bytes(mask), "image/png"),
                    },
                    data={"request": json.dumps({"text_prompt": "sky"})},
                )
            )
            health = [(await client.get("/api/v1/health")).status_code for _ in range(3)]
            return await fill, health

    response, health = asyncio.run(run())
    assert health == [200, 200, 200]
    assert_error(response, 422, "validation_error")


def test_concurrent_segments_run_the_encoder_once_per_photo(server: Server) -> None:
    """100 concurrent /segment calls on 4 photos never seen before: exactly 4 encoder runs."""
    photos = [png_bytes(_photo(100 + i, 48, 64)) for i in range(4)]
    before = _sam_counts(server.url)
    responses = asyncio.run(_segment_all(server.url, photos * 25, [4, 4, 40, 30]))
    assert [r.status_code for r in responses] == [200] * 100
    after = _sam_counts(server.url)
    assert after["images_encoded"] - before["images_encoded"] == 4
    cached = [r.json()["metadata"]["embedding_cached"] for r in responses]
    assert cached.count(False) == 4


@pytest.fixture(scope="module")
def short_deadline_server(
    bentoml_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """Requests give up after 2 s; 16 at a time hold an image in the entry, and the others
    wait at most 1 s for a slot."""
    log = tmp_path_factory.mktemp("serve-deadline") / "serve.log"
    env = {
        **SERVER_ENV,
        "PROCESSING_TIMEOUT_S": "2",
        "MAX_CONCURRENT_REQUESTS": "16",
        "ADMISSION_WAIT_S": "1",
    }
    try:
        with serving(bentoml_home, log, env) as running:
            yield Server(url=running.url, log=running.log, bentoml_home=bentoml_home)
    except ServerError as exc:
        pytest.fail(str(exc))


async def _embeds_started(client: httpx.AsyncClient) -> float:
    """How many encoder calls the SAM runner has started (its own /metrics, via the entry)."""
    text = (await client.get("/metrics")).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "inpaint_runner_batch_size_count"
        and sample.labels == {"runner": "sam", "method": "embed"}
    )


async def _until_an_encode_started(client: httpx.AsyncClient, before: float) -> None:
    for _ in range(300):
        if await _embeds_started(client) > before:
            return
        await asyncio.sleep(0.1)
    pytest.fail("no call reached the SAM encoder")


def test_ready_answers_while_the_runners_are_busy_and_timed_out_work_is_skipped(
    short_deadline_server: Server,
) -> None:
    """While another forward holds the CPU, 40 distinct photos arrive: 16 get into the entry
    and queue up at the SAM runner, the rest wait for a slot in the entry. /ready answers
    meanwhile; the 24 that get no slot within the 1 s admission wait get 503 overloaded with
    Retry-After, the admitted ones 504 past their 2 s deadline, and the runner skips the
    queued encoder work of callers who gave up instead of running it for nobody."""
    url = short_deadline_server.url
    photos = [png_bytes(_photo(500 + i, 24, 32)) for i in range(40)]
    before = _sam_counts(url)

    async def run() -> tuple[list[httpx.Response], httpx.Response, bool]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            with compute_lock_held():
                segments = asyncio.ensure_future(_segment_all(url, photos, [2, 2, 20, 16]))
                await asyncio.sleep(0.5)
                ready = await client.get("/api/v1/ready")
                answered_first = not segments.done()
                responses = await segments
        return responses, ready, answered_first

    responses, ready, answered_first = asyncio.run(run())
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert answered_first, "/ready waited for the queued inference"
    statuses = [r.status_code for r in responses]
    # No slot frees up before the admitted requests' deadlines, 1 s after the waiters gave up.
    assert sorted(statuses) == [503] * 24 + [504] * 16, statuses
    for response in responses:
        if response.status_code == 504:
            assert_error(response, 504, "processing_timeout")
        else:
            assert_error(response, 503, "overloaded")
            assert response.headers["retry-after"] == "5"
    for _ in range(300):  # the runner skips the queued jobs when they leave its queue
        after = _sam_counts(url)
        if sum(after[k] - before[k] for k in ("skipped_expired", "skipped_cancelled")) >= 15:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the SAM runner ran work whose callers had timed out: {before} -> {after}")
    # Only the call already waiting inside the encoder when its caller gave up ran.
    assert after["images_encoded"] - before["images_encoded"] <= 1


def test_a_client_that_goes_away_has_its_queued_encoder_work_skipped(
    short_deadline_server: Server,
) -> None:
    """While another forward holds the CPU, one request's encode waits inside the SAM runner
    and a second request's call queues behind it. The second client goes away: the entry sees
    the disconnect (BentoML lets it), cancels the request's work and tells the SAM runner,
    which skips that queued job instead of running it for nobody."""
    server = short_deadline_server
    request_id = f"gone-{np.random.default_rng().integers(1 << 40)}"

    def segment(client: httpx.AsyncClient, seed: int, **kwargs: Any) -> Any:
        return client.post(
            "/api/v1/segment",
            files={"image": ("p.png", png_bytes(_photo(seed, 24, 32)), "image/png")},
            data={"request": json.dumps({"box": [2, 2, 20, 16]})},
            **kwargs,
        )

    async def run() -> str:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            with compute_lock_held():
                started = await _embeds_started(client)
                ahead = asyncio.ensure_future(segment(client, 700))
                await _until_an_encode_started(client, started)
                with pytest.raises(httpx.ReadTimeout):
                    await segment(client, 701, headers={"X-Request-ID": request_id}, timeout=1.0)
                gave_up = await asyncio.to_thread(
                    wait_for_log,
                    server.log,
                    rf"request {request_id} gave up: cancelling SAM call (\w+)",
                )
            await ahead
        return gave_up.group(1)

    call_id = asyncio.run(run())
    assert f"{request_id} 408 client_closed_request" in server.log.read_text()
    wait_for_log(server.log, rf"SAM call {call_id} skipped: cancelled by its caller")


def test_lama_work_queued_past_its_deadline_is_skipped(short_deadline_server: Server) -> None:
    """While another forward holds the CPU, two removals with their own masks reach LaMa: the
    first waits inside it, the second in its queue. Both callers get 504 at the deadline, and
    the queued job is skipped when it leaves the queue instead of running for nobody."""
    url = short_deadline_server.url

    def lama_skipped() -> int:
        ready = httpx.get(f"{url}/api/v1/ready", timeout=30).json()
        return ready["models"]["lama"]["details"]["skipped_expired"]

    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 20:40] = 255
    before = lama_skipped()

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            with compute_lock_held():
                return await asyncio.gather(
                    *(
                        client.post(
                            "/api/v1/remove",
                            files={
                                "image": ("p.png", png_bytes(_photo(900 + i, 48, 64)), "image/png"),
                                "mask": ("m.png", png_bytes(mask), "image/png"),
                            },
                        )
                        for i in range(2)
                    )
                )

    for response in asyncio.run(run()):
        assert_error(response, 504, "processing_timeout")
    for _ in range(300):
        if lama_skipped() > before:
            return
        time.sleep(0.1)
    pytest.fail("LaMa ran the work of callers who had timed out")


def test_a_client_that_goes_away_stops_its_stable_diffusion_work(
    short_deadline_server: Server,
) -> None:
    """While another forward holds the CPU, a fill (with its own mask, so SD is the only
    model) waits inside its first denoising step. Its client goes away: the entry tells the
    SD runner, which stops the call at its next step instead of running 20 steps for nobody."""
    server = short_deadline_server
    request_id = f"gone-sd-{np.random.default_rng().integers(1 << 40)}"
    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 20:40] = 255

    async def run() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=1.0) as client:
            with compute_lock_held():
                with pytest.raises(httpx.ReadTimeout):
                    await client.post(
                        "/api/v1/fill",
                        headers={"X-Request-ID": request_id},
                        files={
                            "image": ("p.png", png_bytes(_photo(950, 48, 64)), "image/png"),
                            "mask": ("m.png", png_bytes(mask), "image/png"),
                        },
                        data={
                            "request": json.dumps({"text_prompt": "sky", "num_inference_steps": 20})
                        },
                    )
                gave_up = await asyncio.to_thread(
                    wait_for_log,
                    server.log,
                    rf"request {request_id} gave up: cancelling SD job (\w+)",
                )
        job_id = gave_up.group(1)
        stopped = await asyncio.to_thread(
            wait_for_log, server.log, rf"SD jobs {job_id} (stopped at step (\d+) of 20|skipped)"
        )
        if stopped.group(2) is not None:
            assert int(stopped.group(2)) < 20

    asyncio.run(run())

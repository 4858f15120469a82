"""bench.py's `jobs` section: what running a fill as a job costs over the synchronous route.

On one photo whose embedding is cached (so SAM's encoder is out of the figures), each run
sends the same fill three ways, one after another: `POST /api/v1/fill`; `POST /jobs/fill`,
polled every POLL_S until done, then `GET result`; and `POST /jobs/fill` with
`Prefer: wait=60`. Medians; the overhead is the job's time minus the synchronous one.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

import httpx

POLL_S = 0.05
REQUEST = {
    "point_coords": [[200, 450]],
    "text_prompt": "a teddy bear on a bench",
    "num_inference_steps": 10,
    "seed": 1,
}


async def _post(client: httpx.AsyncClient, route: str, image: bytes, **headers: str) -> Any:
    response = await client.post(
        f"/api/v1/{route}",
        files={"image": ("photo.png", image, "image/png")},
        data={"request": json.dumps(REQUEST)},
        headers=headers,
    )
    if response.status_code not in (200, 202):
        raise RuntimeError(f"{route}: {response.status_code} {response.text[:300]}")
    return response


async def _sync(client: httpx.AsyncClient, image: bytes) -> float:
    started = time.perf_counter()
    await _post(client, "fill", image)
    return time.perf_counter() - started


async def _polled(client: httpx.AsyncClient, image: bytes) -> float:
    started = time.perf_counter()
    job = (await _post(client, "jobs/fill", image)).json()
    while (await client.get(job["status_url"])).json()["state"] not in ("done", "failed"):
        await asyncio.sleep(POLL_S)
    result = await client.get(job["result_url"])
    if result.status_code != 200:
        raise RuntimeError(f"job result: {result.status_code} {result.text[:300]}")
    return time.perf_counter() - started


async def _waited(client: httpx.AsyncClient, image: bytes) -> float:
    started = time.perf_counter()
    response = await _post(client, "jobs/fill", image, Prefer="wait=60")
    if response.status_code != 200:
        raise RuntimeError("Prefer: wait=60 did not answer with the result")
    return time.perf_counter() - started


def _ms(seconds: list[float]) -> float:
    return round(statistics.median(seconds) * 1000, 1)


async def jobs_section(url: str, image: bytes, repeats: int) -> dict[str, Any]:
    runs: dict[str, list[float]] = {"sync": [], "job_polled": [], "job_prefer_wait": []}
    async with httpx.AsyncClient(base_url=url, timeout=3600) as client:
        await _sync(client, image)  # the embedding is cached from here on
        for _ in range(repeats):
            runs["sync"].append(await _sync(client, image))
            runs["job_polled"].append(await _polled(client, image))
            runs["job_prefer_wait"].append(await _waited(client, image))
    medians = {f"{name}_ms": _ms(seconds) for name, seconds in runs.items()}
    sync = medians["sync_ms"]
    return {
        **medians,
        "overhead_polled_ms": round(medians["job_polled_ms"] - sync, 1),
        "overhead_prefer_wait_ms": round(medians["job_prefer_wait_ms"] - sync, 1),
        "poll_interval_ms": POLL_S * 1000,
        "runs": repeats,
    }

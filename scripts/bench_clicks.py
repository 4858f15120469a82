"""The `clicks` section of scripts/bench.py: what a click on an already-embedded photo costs.

- cached `/segment` vs a bare `SamPredictor.predict` (same weights and threads, alternated,
  the server idle while predict runs), and the same with the editor's `/embedding` as raw
  bytes vs JSON;
- a cached click sent while another photo's `/segment` is encoding, vs the same click idle.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import httpx
import numpy as np

from scripts.bench import CLICK, _post, _summary, _variant, cached_segment_vs_predict

BUSY_DELAY_S = 0.3  # the click leaves this long after the other photo's request


async def _click_during_encode(
    client: httpx.AsyncClient, cached: bytes, new_photo: bytes
) -> tuple[float, float]:
    """(the cached click's seconds, the encoding request's seconds), sent overlapping."""
    encoding = asyncio.ensure_future(_post(client, "segment", new_photo, CLICK))
    await asyncio.sleep(BUSY_DELAY_S)
    click = await _post(client, "segment", cached, CLICK)
    return click, await encoding


async def _embedding_fetch(client: httpx.AsyncClient, image: bytes, binary: bool) -> float:
    headers = {"Accept": "application/octet-stream"} if binary else {}
    started = time.perf_counter()
    response = await client.post(
        "/api/v1/embedding", files={"image": ("p.png", image, "image/png")}, headers=headers
    )
    response.raise_for_status()
    return time.perf_counter() - started


async def clicks_section(url: str, photo: np.ndarray, sam_tag: str, repeats: int) -> dict:
    rounds = max(repeats, 5)
    cached = _variant(photo, 9100)
    async with httpx.AsyncClient(base_url=url, timeout=3600) as client:
        segment, bare = await cached_segment_vs_predict(client, photo, cached, sam_tag, rounds)
        binary = [await _embedding_fetch(client, cached, True) for _ in range(rounds)]
        as_json = [await _embedding_fetch(client, cached, False) for _ in range(rounds)]
        idle = [await _post(client, "segment", cached, CLICK) for _ in range(rounds)]
        busy, encodes = [], []
        for index in range(rounds):
            click, encode = await _click_during_encode(
                client, cached, _variant(photo, 9200 + index)
            )
            busy.append(click)
            encodes.append(encode)
    report: dict[str, Any] = {
        "cached_segment": _summary(segment),
        "bare_predict": _summary(bare),
        "embedding_binary": _summary(binary),
        "embedding_json": _summary(as_json),
        "click_idle": _summary(idle),
        "click_while_encoding": _summary(busy),
        "encoding_request": _summary(encodes),
    }
    report["cached_segment_over_predict"] = round(
        statistics.median(segment) / statistics.median(bare), 3
    )
    report["busy_click_over_idle"] = round(statistics.median(busy) / statistics.median(idle), 3)
    return report

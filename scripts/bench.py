"""Benchmarks of the real server, measured side by side in one run and reported as ratios.

    .venv/bin/python scripts/bench.py                    # tiny models (a few minutes)
    .venv/bin/python scripts/bench.py --sam vit_b        # real-size SAM vit_b, random weights
    .venv/bin/python scripts/bench.py --out bench-results/tiny.json

What it measures, each against a `bentoml serve` of this project in a temporary model store:

1. latency of every route over HTTP: the first call on an image (SAM encoder runs) and a
   repeated call on the same image (embedding cache hit);
2. the HTTP end-to-end cost of `remove` vs. the same flow code called in-process
   (`InpaintAnything()` with local runners), interleaved A/B;
3. throughput of concurrent `segment` calls on distinct images with adaptive batching
   (SAM_MAX_BATCH_SIZE=4; the default on a GPU host) vs. without (SAM_MAX_BATCH_SIZE=1;
   the default on a CPU host), on two fresh servers.

Timings on a shared machine are noisy: compare the ratios, and rerun before trusting a gap.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.local_server import REPO_ROOT, import_tiny_models, serving  # noqa: E402

EXAMPLES = REPO_ROOT / "examples"
PHOTO = EXAMPLES / "remove" / "dog.jpg"  # 800x534
CLICK = {"point_coords": [[200, 450]]}
PROMPT = {"text_prompt": "a teddy bear on a bench", "num_inference_steps": 10, "seed": 1}
ROUTES: dict[str, dict[str, Any]] = {
    "segment": CLICK,
    "remove": CLICK,
    "fill": {**CLICK, **PROMPT},
    "replace": {**CLICK, **PROMPT},
}


def _variant(photo: np.ndarray, index: int) -> bytes:
    """The photo with one pixel changed: a new image for the embedding cache, same size."""
    pixels = photo.copy()
    pixels[0, index % pixels.shape[1], 0] ^= 1 + index // pixels.shape[1]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


async def _post(client: httpx.AsyncClient, route: str, image: bytes, request: dict) -> float:
    started = time.perf_counter()
    response = await client.post(
        f"/api/v1/{route}",
        files={"image": ("photo.png", image, "image/png")},
        data={"request": json.dumps(request)},
    )
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"{route}: {response.status_code} {response.text[:300]}")
    return elapsed


def _summary(seconds: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(seconds) * 1000, 1),
        "min_ms": round(min(seconds) * 1000, 1),
        "runs": len(seconds),
    }


async def route_latencies(url: str, photo: np.ndarray, repeats: int) -> dict[str, Any]:
    """Per route: first call on a new image (encoder runs) vs. a repeat (cache hit)."""
    results: dict[str, Any] = {}
    counter = 1000
    async with httpx.AsyncClient(base_url=url, timeout=3600) as client:
        for route, request in ROUTES.items():
            first, repeat = [], []
            for _ in range(repeats):
                counter += 1
                image = _variant(photo, counter)
                first.append(await _post(client, route, image, request))
                repeat.append(await _post(client, route, image, request))
            results[route] = {"first_call": _summary(first), "repeat_call": _summary(repeat)}
            print(
                f"  {route:8s} first {results[route]['first_call']['median_ms']:>9} ms, "
                f"repeat {results[route]['repeat_call']['median_ms']:>9} ms"
            )
    return results


async def http_vs_in_process(url: str, photo: np.ndarray, repeats: int) -> dict[str, Any]:
    """`remove` over HTTP vs. the same flow in this process, both on a cached embedding."""
    from api.schemas import RemoveRequest
    from service import InpaintAnything

    service = InpaintAnything()  # runners are instantiated locally (bentoml.depends)
    image = _variant(photo, 1)
    scratch = Path(tempfile.mkdtemp(prefix="bench-")) / "photo.png"
    scratch.write_bytes(image)
    request = RemoveRequest.model_validate(CLICK)

    async def in_process() -> float:
        started = time.perf_counter()
        upload = await service._read_upload(scratch, None)
        response = await service._remove(request, upload)
        response.model_dump_json()  # the serialisation BentoML does for HTTP
        return time.perf_counter() - started

    http_times, local_times = [], []
    async with httpx.AsyncClient(base_url=url, timeout=3600) as client:
        await _post(client, "remove", image, CLICK)  # warm both caches and both model copies
        await in_process()
        for _ in range(repeats):
            http_times.append(await _post(client, "remove", image, CLICK))
            local_times.append(await in_process())
    http, local = _summary(http_times), _summary(local_times)
    return {
        "http": http,
        "in_process": local,
        "http_over_in_process": round(http["median_ms"] / local["median_ms"], 3),
        "http_overhead_ms": round(http["median_ms"] - local["median_ms"], 1),
    }


async def throughput(url: str, photo: np.ndarray, concurrency: int, requests: int) -> dict:
    """Concurrent `segment` calls, each on a new image (so each runs the SAM encoder)."""
    images = [_variant(photo, 5000 + i) for i in range(requests)]
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for image in images:
        queue.put_nowait(image)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            await _post(client, "segment", queue.get_nowait(), CLICK)

    async with httpx.AsyncClient(base_url=url, timeout=3600) as client:
        await _post(client, "segment", _variant(photo, 4999), CLICK)  # warm-up
        batches_before, items_before = _embed_batches((await client.get("/metrics")).text)
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        batches_after, items_after = _embed_batches((await client.get("/metrics")).text)
    batches = batches_after - batches_before
    return {
        "requests": requests,
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "requests_per_s": round(requests / elapsed, 3),
        "encoder_batches": batches,
        "mean_batch_size": round((items_after - items_before) / batches, 2) if batches else None,
    }


def _embed_batches(metrics: str) -> tuple[float, float]:
    """(batches run, items in them) so far by SAM's embed API, from BentoML's histogram."""
    totals = {"_count": 0.0, "_sum": 0.0}
    for line in metrics.splitlines():
        for suffix in totals:
            if line.startswith(f"bentoml_service_adaptive_batch_size{suffix}{{") and (
                'method_name="embed"' in line
            ):
                totals[suffix] += float(line.rsplit(" ", 1)[1])
    return totals["_count"], totals["_sum"]


def _prepare_store(home: Path, sam: str) -> dict[str, str]:
    """Tiny models, plus a full-size random SAM checkpoint when asked; returns settings.
    BENTOML_HOME must already name `home` (bentoml reads it at import)."""
    import_tiny_models(home)
    if sam == "tiny":
        return {}
    from models.sam_checkpoint import SAM_ARCHITECTURES
    from tooling.model_import import import_sam
    from tooling.tiny import write_random_sam_checkpoint

    checkpoint = write_random_sam_checkpoint(home / f"sam_{sam}_random.pth", SAM_ARCHITECTURES[sam])
    return {"SAM_MODEL": import_sam(checkpoint, sam, f"sam-{sam}-random", demo=True)}


def _timed(label: str, run: Callable[[], Awaitable[Any]]) -> Any:
    print(f"{label} ...", flush=True)
    started = time.perf_counter()
    result = asyncio.run(run())
    print(f"  done in {time.perf_counter() - started:.0f} s", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sam", choices=["tiny", "vit_b"], default="tiny")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="inpaint-bench-"))
    home = work / "bentoml"
    # The in-process comparison reads the same store as the server.
    os.environ["BENTOML_HOME"] = str(home)
    settings = {**_prepare_store(home, args.sam), "TORCH_THREADS": "1"}
    os.environ.update(settings)
    photo = np.asarray(Image.open(PHOTO).convert("RGB"))
    report: dict[str, Any] = {
        "sam": args.sam,
        "photo": f"{PHOTO.name} {photo.shape[1]}x{photo.shape[0]}",
        "cpu_count": os.cpu_count(),
        "settings": settings,
    }

    batched = {**settings, "SAM_MAX_BATCH_SIZE": "4"}
    with serving(home, work / "serve-batching.log", batched) as server:
        report["routes"] = _timed(
            "route latency", lambda: route_latencies(server.url, photo, args.repeats)
        )
        report["http_vs_in_process"] = _timed(
            "HTTP vs in-process remove",
            lambda: http_vs_in_process(server.url, photo, args.repeats),
        )
        if not args.skip_throughput:
            report["throughput_batching"] = _timed(
                "throughput, adaptive batching",
                lambda: throughput(server.url, photo, args.concurrency, args.requests),
            )
    if not args.skip_throughput:
        unbatched = {**settings, "SAM_MAX_BATCH_SIZE": "1"}
        with serving(home, work / "serve-no-batching.log", unbatched) as server:
            report["throughput_no_batching"] = _timed(
                "throughput, no batching",
                lambda: throughput(server.url, photo, args.concurrency, args.requests),
            )
        report["batching_speedup"] = round(
            report["throughput_batching"]["requests_per_s"]
            / report["throughput_no_batching"]["requests_per_s"],
            3,
        )
    segment = report["routes"]["segment"]
    report["segment_first_over_repeat"] = round(
        segment["first_call"]["median_ms"] / segment["repeat_call"]["median_ms"], 2
    )

    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

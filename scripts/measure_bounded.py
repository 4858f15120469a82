"""Issue 6's closing numbers for one checkout: 100 concurrent /segment on 4 photos, and the
entry's peak RSS for 20 concurrent removes of a 36-MP photo (tiny models, real `bentoml serve`).

    .venv/bin/python scripts/measure_bounded.py [--repo DIR] [--only segment|remove] [--out FILE]

`--repo` serves another checkout (e.g. the previous commit) with the same store and settings,
so two runs side by side compare like for like. Encoder runs: the SAM runner's counter where
it has one, else the responses with `embedding_cached: false` (each such miss ran it once).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from scripts.local_server import REPO_ROOT, import_tiny_models, serving

ENV = {"TORCH_THREADS": "1", "MAX_IMAGE_PIXELS": "40000000", "MAX_FILE_SIZE": str(64 << 20)}


def _jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _photos(size: tuple[int, int], count: int, seed: int) -> list[bytes]:
    with Image.open(REPO_ROOT / "examples/remove/dog.jpg") as dog:
        base = np.asarray(dog.convert("RGB").resize(size[::-1], Image.Resampling.BICUBIC))
    noise = np.random.default_rng(seed).integers(-3, 4, (count, 1, 1, 3))
    return [_jpeg(np.clip(base.astype(int) + n, 0, 255).astype(np.uint8)) for n in noise]


async def _post_all(url: str, route: str, photos: list[bytes], request: dict) -> list[tuple]:
    async with httpx.AsyncClient(base_url=url, timeout=3600, limits=httpx.Limits()) as client:

        async def one(photo: bytes) -> tuple[int, float, bool | None]:
            started = time.perf_counter()
            response = await client.post(
                f"/api/v1/{route}",
                files={"image": ("p.jpg", photo, "image/jpeg")},
                data={"request": json.dumps(request)},
            )
            cached = response.json().get("metadata", {}).get("embedding_cached")
            return response.status_code, time.perf_counter() - started, cached

        return await asyncio.gather(*(one(photo) for photo in photos))


def _statuses(results: list[tuple]) -> dict[str, int]:
    codes = [r[0] for r in results]
    return {str(code): codes.count(code) for code in sorted(set(codes))}


def _encoder_images(url: str) -> int | None:
    details = httpx.get(f"{url}/api/v1/ready", timeout=60).json()["models"]["sam"]["details"]
    return details.get("images_encoded")


def _entry_process(repo: Path) -> psutil.Process:
    """The entry service's worker: the serve process tree's member that is no runner."""
    for process in psutil.process_iter(["cmdline", "cwd"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if process.info["cwd"] == str(repo) and "_bentoml_impl.worker.service" in cmdline:
            if "_runner" not in cmdline:
                return process
    raise RuntimeError("entry worker not found")


def measure(repo: Path, home: Path, log: Path, only: str | None) -> dict:
    report: dict = {"repo": str(repo)}
    with serving(home, log, ENV, cwd=repo) as server:
        if only != "remove":
            report["segment_100_on_4"] = _segments(server.url)
            print(json.dumps(report["segment_100_on_4"]), flush=True)
        if only != "segment":
            report["remove_20_x_36mp"] = _removes(server.url, repo)
    return report


def _segments(url: str) -> dict:
    """100 concurrent /segment calls on 4 photos this server has never seen."""
    photos = _photos((534, 800), 4, seed=int(time.time()))
    before = _encoder_images(url)
    results = asyncio.run(_post_all(url, "segment", photos * 25, {"box": [50, 50, 600, 450]}))
    after = _encoder_images(url)
    seconds = sorted(r[1] for r in results)
    return {
        "statuses": _statuses(results),
        "p50_s": round(float(np.percentile(seconds, 50)), 2),
        "p95_s": round(float(np.percentile(seconds, 95)), 2),
        "encoder_images_counted": None if after is None else after - before,
        "embedding_cached_false": sum(r[2] is False for r in results),
    }


def _removes(url: str, repo: Path) -> dict:
    """20 concurrent /remove calls on one 36-MP JPEG, sampling the entry's RSS every 50 ms."""
    entry = _entry_process(repo)
    baseline = entry.memory_info().rss
    peak, done = [baseline], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], entry.memory_info().rss)
            time.sleep(0.05)

    big = _photos((5000, 7200), 1, seed=7)[0]
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        removes = asyncio.run(
            _post_all(url, "remove", [big] * 20, {"point_coords": [[3600, 2800]]})
        )
    finally:
        done.set()
        sampler.join()
    return {
        "statuses": _statuses(removes),
        "entry_rss_before_mb": round(baseline / 2**20),
        "entry_peak_rss_mb": round(peak[0] / 2**20),
        "p50_s": round(float(np.median([r[1] for r in removes])), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO_ROOT)
    parser.add_argument("--only", choices=["segment", "remove"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="measure-"))
    import_tiny_models(scratch / "home")
    report = measure(args.repo.resolve(), scratch / "home", scratch / "serve.log", args.only)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""bench.py's `batch` section: photos per minute over a folder of photos, one click each.

Three ways through the same photos (new ones for each, so no embedding is cached), on the
same weights and the same machine:

- `scripts/batch.py` against the bench's server (its concurrency from the server's capacity);
- a loop a user would write: read a photo, POST /api/v1/remove, write the result, one at a time;
- Inpaint-Anything's per-photo logic (bench.py's `reference_remove`: load SAM and LaMa, embed,
  predict, dilate, inpaint), as its scripts run for every photo; its per-photo time, measured
  on a few photos, gives its rate.

Targets (issue 15): the batch command at least 5x the per-photo logic, and not slower than
the loop.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from scripts.local_server import REPO_ROOT

CLICK = (200, 450)  # dog.jpg's published click, inside every variant


def _folder(
    variant: Callable[[np.ndarray, int], bytes], photo: np.ndarray, first: int, count: int
) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    for index in range(count):
        (folder / f"photo{index:03d}.png").write_bytes(variant(photo, first + index))
    return folder


def _out(photos: Path) -> Path:
    return photos.with_name(photos.name + "-out")


def run_batch_command(url: str, photos: Path, out: Path) -> float:
    """Seconds for `scripts/batch.py` over the folder, start-up included (as a user runs it)."""
    started = time.perf_counter()
    click = f"{CLICK[0]},{CLICK[1]}"
    result = subprocess.run(
        [sys.executable, "scripts/batch.py", str(photos), str(out), "--url", url, "--point", click],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"batch.py exited {result.returncode}: {result.stderr[-2000:]}")
    return elapsed


def run_loop(url: str, photos: Path, out: Path) -> float:
    """Seconds for the same requests sent one at a time, results written as they come."""
    out.mkdir(parents=True, exist_ok=True)
    request = json.dumps({"point_coords": [list(CLICK)]})
    started = time.perf_counter()
    with httpx.Client(base_url=url, timeout=3600) as client:
        for path in sorted(photos.iterdir()):
            response = client.post(
                "/api/v1/remove",
                files={"image": (path.name, path.read_bytes(), "image/png")},
                data={"request": request},
            )
            response.raise_for_status()
            (out / path.name).write_bytes(base64.b64decode(response.json()["image"]))
    return time.perf_counter() - started


def batch_section(
    url: str,
    photo: np.ndarray,
    variant: Callable[[np.ndarray, int], bytes],
    per_photo: Callable[[], dict[str, Any]],
    count: int = 20,
) -> dict[str, Any]:
    """Photos per minute: the batch command, a one-at-a-time loop, the per-photo logic."""
    with httpx.Client(base_url=url, timeout=3600) as client:
        capacity = client.get("/api/v1/ready").json().get("capacity")
    # Warm-up on a photo of its own, so neither measured run pays for a first call.
    warm = _folder(variant, photo, 20_000, 1)
    run_loop(url, warm, _out(warm))
    loop_photos = _folder(variant, photo, 21_000, count)
    batch_photos = _folder(variant, photo, 22_000, count)
    loop_s = run_loop(url, loop_photos, _out(loop_photos))
    batch_s = run_batch_command(url, batch_photos, _out(batch_photos))
    reference = per_photo()
    per_photo_s = reference["total"]["median_ms"] / 1000
    rates = {
        "batch_command": round(count / batch_s * 60, 2),
        "one_at_a_time_loop": round(count / loop_s * 60, 2),
        "inpaint_anything_per_photo": round(60 / per_photo_s, 2),
    }
    return {
        "photos": count,
        "photo_size": f"{photo.shape[1]}x{photo.shape[0]}",
        "capacity": capacity,
        "seconds": {"batch_command": round(batch_s, 2), "one_at_a_time_loop": round(loop_s, 2)},
        "inpaint_anything_per_photo_s": round(per_photo_s, 2),
        "inpaint_anything_runs": reference["total"]["runs"],
        "photos_per_minute": rates,
        "batch_over_per_photo": round(
            rates["batch_command"] / rates["inpaint_anything_per_photo"], 2
        ),
        "batch_over_loop": round(rates["batch_command"] / rates["one_at_a_time_loop"], 3),
    }

"""scripts/batch.py against a real `bentoml serve` on the tiny models.

A folder of 30 small photos cut from the example photos (JPEG, PNG and lossless WebP, four
sizes, three folder levels), one corrupt file and one photo too small for the click: the
one-click form, masks by name, the manifest (JSONL and CSV), a run interrupted half-way and
resumed, 429 backoff with an API key, and the exit codes. The command runs as a user runs it:
a subprocess, its output not a terminal.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from scripts.local_server import REPO_ROOT, free_port, serving
from tests.e2e.conftest import SERVER_ENV, Server
from tests.e2e.helpers import EXAMPLES, load_rgb

pytestmark = pytest.mark.e2e

SIZES = [(96, 64), (128, 96), (72, 120), (160, 112)]  # (width, height): all hold the click
FORMATS = [("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP")]
FOLDERS = ["", "street", "street/night"]
CLICK = (30, 30)
BAD = {"broken.jpg": "invalid_image", "street/tiny.png": "validation_error"}
KEY = "batch-test-key"


def _source_photos() -> list[np.ndarray]:
    photos = sorted((EXAMPLES / "remove").glob("*.jpg")) + sorted((EXAMPLES / "fill").glob("*.*"))
    return [load_rgb(path) for path in photos]


def _write(path: Path, pixels: np.ndarray, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"lossless": True} if fmt == "WEBP" else {}
    Image.fromarray(pixels).save(path, format=fmt, **options)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 good photos plus the two bad ones, under one folder."""
    root = tmp_path_factory.mktemp("photos")
    sources = _source_photos()
    for index in range(30):
        width, height = SIZES[index % len(SIZES)]
        extension, fmt = FORMATS[index % len(FORMATS)]
        folder = FOLDERS[index % len(FOLDERS)]
        pixels = np.asarray(
            Image.fromarray(sources[index % len(sources)]).resize((width, height), Image.BILINEAR)
        )
        _write(root / folder / f"photo{index:02d}.{extension}", pixels, fmt)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    _write(root / "street" / "tiny.png", np.full((20, 20, 3), 90, np.uint8), "PNG")
    (root / "notes.txt").write_text("not a photo: ignored")
    return root


def _good(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("photo*")
        if p.suffix in (".jpg", ".png", ".webp")
    )


def _copy(source: Path, target: Path, names: list[str]) -> None:
    for name in names:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, target / name)


def batch(
    url: str, *args: str | Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "scripts/batch.py", *map(str, args), "--url", url],
        cwd=REPO_ROOT,
        env={**_client_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _client_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("INPAINT_")}


def report(path: Path) -> dict[str, dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(
        set(line) == {"file", "status", "operation", "error_code", "message", "seconds", "output"}
        for line in lines
    )
    by_file = {line["file"]: line for line in lines}
    assert len(by_file) == len(lines), "one line per photo"
    return by_file


def statuses(lines: dict[str, dict[str, Any]], status: str) -> set[str]:
    return {name for name, line in lines.items() if line["status"] == status}


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout.strip().splitlines()[-1]


def assert_result(photo: Path, result: Path, mask_file: Path | None = None) -> np.ndarray:
    """The result has the photo's size; outside the regenerated mask it is the photo."""
    original = load_rgb(photo)
    with Image.open(result) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape == original.shape
    if mask_file is None:
        return pixels
    with Image.open(mask_file) as image:
        mask = np.asarray(image) > 0
    assert mask.shape == original.shape[:2] and mask.any()
    np.testing.assert_array_equal(pixels[~mask], original[~mask])
    return mask


def test_ready_publishes_the_capacity_batches_size_themselves_by(server: Server) -> None:
    capacity = httpx.get(f"{server.url}/api/v1/ready", timeout=30).json()["capacity"]
    assert capacity["max_concurrent_requests"] == 4 and capacity["job_max_running"] == 1
    assert capacity["admission_wait_s"] == 30
    assert capacity["concurrency"] == {"requests": 4, "jobs": 2}
    assert capacity["rate_limit"] is None and capacity["retry_after_s"] == 5


def test_one_click_for_every_photo(server: Server, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    point = f"{CLICK[0]},{CLICK[1]}"
    result = batch(server.url, photos, out, "--point", point, "--save-masks")
    assert result.returncode == 1, result.stderr  # two photos failed
    assert last_line(result).startswith("batch: 30 succeeded, 2 failed, 0 skipped")
    # The server has /jobs/remove, so remove goes through jobs, sized by the jobs' capacity.
    assert "32 photos to do, 2 jobs in flight (server capacity)" in result.stderr
    assert "\r" not in result.stderr, "no progress bar when stderr is not a terminal"
    assert re.search(r"\[\d+/32\] done street/photo01\.png .* photos/min", result.stderr)

    lines = report(out / "batch-report.jsonl")
    good = _good(photos)
    assert len(good) == 30 and statuses(lines, "done") == set(good)
    for name, code in BAD.items():
        line = lines[name]
        assert line["status"] == "failed" and line["error_code"] == code, line
        assert line["message"] and line["seconds"] >= 0
    assert "point" in lines["street/tiny.png"]["message"]
    for name in good:
        stem = Path(name).with_suffix("")
        assert_result(photos / name, out / f"{stem}.png", out / f"{stem}.mask.png")
    assert not (out / "broken.png").exists() and not (out / "street" / "tiny.png").exists()
    assert not list(out.rglob("*.partial"))

    # Again: the done photos are skipped, the failed ones tried again (and fail again).
    again = batch(server.url, photos, out, "--point", point)
    assert again.returncode == 1
    assert last_line(again).startswith("batch: 0 succeeded, 2 failed, 30 skipped")
    assert statuses(report(out / "batch-report.jsonl"), "skipped") == set(good)


def test_masks_by_name(server: Server, photos: Path, tmp_path: Path) -> None:
    """IOPaint's convention: masks/street/photo01.png is the mask of street/photo01.*."""
    subset, masks, out = tmp_path / "in", tmp_path / "masks", tmp_path / "out"
    chosen = _good(photos)[:6]
    regions = {}
    _copy(photos, subset, chosen)
    for name in chosen[:5]:
        height, width = load_rgb(photos / name).shape[:2]
        region = np.zeros((height, width), np.uint8)
        region[height // 4 : height // 2, width // 3 : 2 * width // 3] = 255
        regions[name] = region > 0
        mask_file = masks / Path(name).with_suffix(".png")
        _write(mask_file, region, "PNG")
    result = batch(
        server.url,
        subset,
        out,
        "--masks",
        masks,
        "--dilate",
        "0",
        "--save-masks",
        "--format",
        "png",
    )
    assert result.returncode == 1, result.stderr
    assert last_line(result).startswith("batch: 5 succeeded, 1 failed, 0 skipped")
    lines = report(out / "batch-report.jsonl")
    assert lines[chosen[5]]["error_code"] == "mask_not_found"
    for name, region in regions.items():
        stem = Path(name).with_suffix("")
        mask = assert_result(photos / name, out / f"{stem}.png", out / f"{stem}.mask.png")
        np.testing.assert_array_equal(mask, region)  # dilation 0: exactly the mask sent


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_manifest(server: Server, photos: Path, tmp_path: Path, kind: str) -> None:
    """One row per photo: its operation and request; fill and replace run as jobs."""
    good = _good(photos)
    rows = [
        {
            "file": good[0],
            "operation": "remove",
            "point_coords": [[30, 30]],
            "dilate_kernel_size": 0,
        },
        {
            "file": good[1],
            "operation": "fill",
            "box": [10, 10, 50, 40],
            "text_prompt": "a red brick wall",
            "seed": 7,
            "output_format": "webp",
        },
        {"file": good[2], "operation": "replace", "point_coords": [[30, 30]], "seed": 3},
        {"file": good[3], "point_coords": [[30, 30]], "point_labels": [1]},  # --operation's
        {"file": "missing.jpg", "operation": "remove", "point_coords": [[1, 1]]},
    ]
    manifest = tmp_path / f"manifest.{kind}"
    if kind == "jsonl":
        manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        columns = sorted({key for row in rows for key in row})
        lines = [",".join(columns)] + [
            ",".join(_csv_cell(row.get(column)) for column in columns) for row in rows
        ]
        manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    log_before = server.log.read_text()
    result = batch(
        server.url, photos, out, "--manifest", manifest, "--prompt", "a garden", "--steps", "2"
    )
    assert result.returncode == 1, result.stderr
    assert last_line(result).startswith("batch: 4 succeeded, 1 failed, 0 skipped")
    lines = report(out / "batch-report.jsonl")
    assert lines["missing.jpg"]["error_code"] == "file_not_found"
    assert [lines[name]["operation"] for name in good[:4]] == [
        "remove",
        "fill",
        "replace",
        "remove",
    ]
    stems = [Path(name).with_suffix("") for name in good[:4]]
    with Image.open(out / f"{stems[1]}.webp") as filled:
        assert filled.format == "WEBP" and filled.size == Image.open(photos / good[1]).size
    for index in (0, 2, 3):
        assert_result(photos / good[index], out / f"{stems[index]}.png")
    new_log = server.log.read_text()[len(log_before) :]
    assert re.search(r"job \S+ \(fill, request", new_log), "fill went through a job"
    assert re.search(r"job \S+ \(replace, request", new_log), "replace went through a job"


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value)
    return '"' + text.replace('"', '""') + '"'


def test_interrupted_then_resumed(server: Server, photos: Path, tmp_path: Path) -> None:
    """Ctrl+C half-way: the jobs in flight are cancelled, nothing is half-written; the next
    run does only the rest."""
    subset, out = tmp_path / "in", tmp_path / "out"
    _copy(photos, subset, _good(photos)[:6])
    command = [sys.executable, "scripts/batch.py", str(subset), str(out), "--url", server.url]
    command += ["--operation", "fill", "--point", "30,30", "--prompt", "a lake", "--steps", "12"]
    log_before = len(server.log.read_text())
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=_client_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    report_file = out / "batch-report.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if report_file.exists() and len(report_file.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be interrupted"
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "batch interrupted:" in stdout.strip().splitlines()[-1]
    first = report(report_file)
    done = statuses(first, "done")
    assert 2 <= len(done) < 6 and not statuses(first, "failed")
    assert not list(out.rglob("*.partial"))
    results = sorted(p.relative_to(out).with_suffix("").as_posix() for p in out.rglob("*.png"))
    assert results == sorted(Path(name).with_suffix("").as_posix() for name in done)
    for name in done:
        assert_result(subset / name, out / Path(name).with_suffix(".png"))
    # The job that was painting when Ctrl+C came was cancelled on the server.
    cancelled = re.search(
        r"job \S+ cancelled at step (\d+) of 12", server.log.read_text()[log_before:]
    )
    assert cancelled is not None and int(cancelled.group(1)) < 12

    resumed = subprocess.run(
        command, cwd=REPO_ROOT, env=_client_env(), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    second = report(report_file)
    assert statuses(second, "skipped") == done
    assert statuses(second, "done") == set(_good(subset)) - done
    assert last_line(resumed).startswith(
        f"batch: {6 - len(done)} succeeded, 0 failed, {len(done)} skipped"
    )


@pytest.fixture(scope="module")
def limited(bentoml_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with an API key and a rate limit a batch runs into at once."""
    settings = {
        **SERVER_ENV,
        "API_KEYS": KEY,
        "RATE_LIMIT_CAPACITY": "2",
        "RATE_LIMIT_REFILL_PER_S": "2",
        "RATE_LIMIT_COSTS": '{"fill": 2, "replace": 2, "jobs": 2}',
    }
    log = tmp_path_factory.mktemp("limited") / "serve.log"
    with serving(bentoml_home, log, settings) as running:
        yield running.url


def test_backs_off_on_429_with_the_key_from_the_environment(
    limited: str, photos: Path, tmp_path: Path
) -> None:
    subset, out = tmp_path / "in", tmp_path / "out"
    _copy(photos, subset, _good(photos)[:8])
    refused = batch(limited, subset, out, "--point", "30,30")
    assert refused.returncode == 1
    assert statuses(report(out / "batch-report.jsonl"), "failed") == set(_good(subset))
    assert {line["error_code"] for line in report(out / "batch-report.jsonl").values()} == {
        "unauthorized"
    }

    result = batch(limited, subset, out, "--point", "30,30", env={"INPAINT_API_KEY": KEY})
    assert result.returncode == 0, result.stderr
    assert last_line(result).startswith("batch: 8 succeeded, 0 failed, 0 skipped")
    metrics = httpx.get(f"{limited}/metrics", timeout=30).text
    limited_count = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("inpaint_requests_total{") and 'status="429"' in line
    )
    assert limited_count > 0, "the batch ran into the rate limit (and waited it out)"


def test_exit_codes_for_usage_and_an_absent_server(photos: Path, tmp_path: Path) -> None:
    absent = f"http://127.0.0.1:{free_port()}"
    no_folder = batch(absent, tmp_path / "nope", tmp_path / "out", "--point", "1,1")
    assert no_folder.returncode == 2 and "is not a folder" in no_folder.stderr
    no_prompt = batch(absent, photos, tmp_path / "out", "--operation", "fill", "--point", "1,1")
    assert no_prompt.returncode == 2 and "needs --prompt" in no_prompt.stderr
    bad_point = batch(absent, photos, tmp_path / "out", "--point", "1")
    assert bad_point.returncode == 2 and "2 comma-separated numbers" in bad_point.stderr
    bad_manifest = tmp_path / "bad.jsonl"
    bad_manifest.write_text('{"file": "a.jpg"}\nnot json\n')
    unreadable = batch(absent, photos, tmp_path / "out", "--manifest", bad_manifest)
    assert unreadable.returncode == 2 and "line 2 is not JSON" in unreadable.stderr
    unreachable = batch(absent, photos, tmp_path / "out", "--point", "1,1")
    assert unreachable.returncode == 3 and "no answer from" in unreachable.stderr
    assert not (tmp_path / "out").exists()

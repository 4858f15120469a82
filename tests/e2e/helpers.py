"""Small helpers for talking to the real server in the e2e tests."""

from __future__ import annotations

import base64
import fcntl
import io
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import redis
from PIL import Image

from runners.runtime import COMPUTE_LOCK_FILE
from tests.conftest import EXAMPLES_DIR

EXAMPLES = EXAMPLES_DIR


def example_cases() -> dict[str, dict[str, Any]]:
    cases = json.loads((EXAMPLES / "cases.json").read_text())["cases"]
    return {case["id"]: case for case in cases}


def example_path(case: dict[str, Any]) -> Path:
    return EXAMPLES / case["image"]


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_b64_image(data: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(data))) as image:
        return np.asarray(image)


def decode_b64_mask(data: str) -> np.ndarray:
    mask = decode_b64_image(data)
    assert mask.ndim == 2 and set(np.unique(mask)) <= {0, 255}, "masks are 0/255 grayscale"
    return mask > 0


def post(
    client: httpx.Client,
    route: str,
    image: bytes | Path,
    request: dict[str, Any] | None = None,
    mask: bytes | None = None,
) -> httpx.Response:
    image_bytes = image.read_bytes() if isinstance(image, Path) else image
    files: dict[str, Any] = {"image": ("image.png", image_bytes, "application/octet-stream")}
    if mask is not None:
        files["mask"] = ("mask.png", mask, "image/png")
    data = {"request": json.dumps(request)} if request is not None else None
    return client.post(f"/api/v1/{route}", files=files, data=data)


def dilate(mask: np.ndarray, kernel_size: int) -> np.ndarray:
    """Inpaint-Anything's dilation, written independently of utils.masks."""
    if kernel_size <= 1:
        return mask
    kernel = np.ones((kernel_size, kernel_size), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel, iterations=1) > 0


def assert_error(response: httpx.Response, status: int, code: str, text: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert set(body) == {"success", "request_id", "timestamp", "error"}
    assert body["error"]["code"] == code, body
    assert text in body["error"]["message"], body
    assert response.headers["x-request-id"] == body["request_id"]


def assert_outside_mask_untouched(
    original: np.ndarray, result: np.ndarray, regenerated: np.ndarray
) -> None:
    """The server's invariant: every pixel where the response mask is 0 is bit-identical."""
    assert result.shape == original.shape
    assert regenerated.shape == original.shape[:2]
    assert regenerated.any(), "the regenerated region should not be empty"
    np.testing.assert_array_equal(result[~regenerated], original[~regenerated])


@contextmanager
def cleared_redis(redis_url: str, pattern: str) -> Iterator[redis.Redis]:
    """A client of the test Redis, with the keys matching `pattern` deleted before and after."""
    client = redis.Redis.from_url(redis_url)
    client.delete(*client.keys(pattern) or ["-"])
    try:
        yield client
    finally:
        client.delete(*client.keys(pattern) or ["-"])


@contextmanager
def compute_lock_held() -> Iterator[None]:
    """Hold the host-wide compute lock the runners take around every CPU forward, as another
    runner's long forward would: the first call to reach a runner waits inside it and the
    calls behind it stay queued, for as long as the block lasts, however fast the machine."""
    with open(COMPUTE_LOCK_FILE, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def wait_for_log(log: Path, pattern: str, timeout_s: float = 30.0) -> re.Match[str]:
    """The first match of `pattern` in the server's log, waiting up to `timeout_s` for it."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = re.search(pattern, log.read_text())
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no {pattern!r} in {log} after {timeout_s} s")
        time.sleep(0.1)

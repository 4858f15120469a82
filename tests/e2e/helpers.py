"""Small helpers for talking to the real server in the e2e tests."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import redis
from PIL import Image

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

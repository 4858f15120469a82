"""100 concurrent mixed requests through a real `bentoml serve` on the tiny models.

Segment, remove, fill and replace on four example photos (at half size, each clicked once
before, as a user does, so that the burst measures serving rather than the SAM encoder),
interleaved with bad inputs, all in flight at once. Every request gets an answer; good ones are
200 (or 503 `overloaded` with Retry-After, the designed answer to a full server), bad ones
exactly their 4xx; every error is in our JSON shape; the server is healthy and ready after.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.crafted_images import png_header_only
from tests.e2e.conftest import SERVER_ENV, Server
from tests.e2e.helpers import (
    decode_b64_image,
    decode_b64_mask,
    example_cases,
    example_path,
    png_bytes,
)

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

CONCURRENT = 100
PHOTOS = ["remove-dog", "remove-baseball", "fill-sample2", "replace-man"]
GOOD_ROUTES = ["segment", "remove", "fill", "replace"]
ERROR_KEYS = {"success", "request_id", "timestamp", "error"}


@dataclass(frozen=True)
class Call:
    """One request and the answer it is designed to get (status 200: a good request)."""

    name: str
    route: str
    files: dict[str, Any] | None
    data: dict[str, str] | None = None
    content: bytes | None = None
    status: int = 200
    code: str | None = None
    photo: np.ndarray | None = None


def _good_calls() -> list[Call]:
    cases = example_cases()
    calls = []
    for case_id in PHOTOS:
        case = cases[case_id]
        with Image.open(example_path(case)) as full:
            photo = np.asarray(full.convert("RGB").reduce(2))
        upload = png_bytes(photo)  # PNG: the lossless invariant can be checked on the answer
        points = [[x // 2, y // 2] for x, y in case["point_coords"]]
        for route in GOOD_ROUTES:
            request: dict[str, Any] = {"point_coords": points}
            if route in ("fill", "replace"):
                request["text_prompt"] = case["text_prompt"] or "a quiet lawn"
            calls.append(
                Call(
                    name=f"{route} {case_id}",
                    route=route,
                    files={"image": ("photo.png", upload, "image/png")},
                    data={"request": json.dumps(request)},
                    photo=photo,
                )
            )
    return calls


def _bad_calls() -> list[Call]:
    dog = (example_path(example_cases()["remove-dog"])).read_bytes()
    too_big = int(SERVER_ENV["MAX_FILE_SIZE"]) + 1
    point = json.dumps({"point_coords": [[200, 450]]})
    return [
        Call("garbage image", "remove", {"image": ("x.png", b"not an image", "image/png")},
             {"request": point}, status=400, code="invalid_image"),
        Call("request not JSON", "segment", {"image": ("d.jpg", dog, "image/jpeg")},
             {"request": "{point_coords"}, status=400, code="malformed_request"),
        Call("click outside", "remove", {"image": ("d.jpg", dog, "image/jpeg")},
             {"request": json.dumps({"point_coords": [[5000, 5]]})}, status=422,
             code="validation_error"),
        Call("fill without prompt", "fill", {"image": ("d.jpg", dog, "image/jpeg")},
             {"request": point}, status=422, code="validation_error"),
        Call("no image part", "segment", None, {"request": point}, status=422,
             code="validation_error"),
        Call("JSON body", "remove", None, content=b'{"image": "x"}', status=415,
             code="unsupported_media_type"),
        Call("file over MAX_FILE_SIZE", "segment",
             {"image": ("big.png", b"\0" * too_big, "image/png")}, status=413,
             code="file_too_large"),
        Call("declared pixels over the limit", "remove",
             {"image": ("bomb.png", png_header_only(4000, 4000), "image/png")},
             {"request": point}, status=413, code="image_too_large"),
    ]  # fmt: skip


def _workload() -> list[Call]:
    good, bad = _good_calls(), _bad_calls()
    calls = [good[i % len(good)] for i in range(CONCURRENT - 2 * len(bad))] + bad + bad
    # A fixed interleaving: bad requests arrive among the good ones, not after them.
    order = np.random.default_rng(6).permutation(len(calls))
    return [calls[i] for i in order]


async def _send(client: httpx.AsyncClient, call: Call) -> httpx.Response:
    url = f"/api/v1/{call.route}"
    if call.content is not None:
        return await client.post(
            url, content=call.content, headers={"Content-Type": "application/json"}
        )
    if call.files is None:
        # multipart with only the `request` part: (None, text) is a plain form field.
        assert call.data is not None
        return await client.post(url, files={k: (None, v) for k, v in call.data.items()})
    return await client.post(url, files=call.files, data=call.data)


def _problem(call: Call, response: httpx.Response) -> str | None:
    """Why this answer is not the designed one; None when it is."""
    try:
        body = response.json()
    except ValueError:
        return f"{call.name}: {response.status_code} not JSON: {response.text[:120]!r}"
    if response.status_code == 200 and call.status == 200:
        return _check_result(call, body)
    if response.status_code == 503 and call.status == 200:
        if (
            body.get("error", {}).get("code") != "overloaded"
            or "retry-after" not in response.headers
        ):
            return f"{call.name}: 503 that is not `overloaded` with Retry-After: {body}"
        return None
    if response.status_code != call.status:
        return f"{call.name}: {response.status_code}, expected {call.status}: {body}"
    if (
        set(body) != ERROR_KEYS
        or body["success"] is not False
        or body["error"]["code"] != call.code
    ):
        return f"{call.name}: expected our error body with code {call.code}: {body}"
    return None


def _check_result(call: Call, body: dict[str, Any]) -> str | None:
    assert call.photo is not None
    if call.route == "segment":
        masks = [decode_b64_mask(m) for m in body["masks"]]
        if len(masks) != 3 or any(m.shape != call.photo.shape[:2] for m in masks):
            return f"{call.name}: masks of the wrong number or size"
        return None
    result, regenerated = decode_b64_image(body["image"]), decode_b64_mask(body["mask"])
    if result.shape != call.photo.shape or regenerated.shape != call.photo.shape[:2]:
        return f"{call.name}: result {result.shape}, photo {call.photo.shape}"
    if not np.array_equal(result[~regenerated], call.photo[~regenerated]):
        return f"{call.name}: pixels outside the returned mask changed"
    return None


async def test_100_concurrent_mixed_requests_get_their_designed_answers(server: Server) -> None:
    warmed: set[str] = set()
    calls = _workload()
    assert len(calls) == CONCURRENT
    limits = httpx.Limits(max_connections=CONCURRENT, max_keepalive_connections=CONCURRENT)
    async with httpx.AsyncClient(base_url=server.url, timeout=300, limits=limits) as client:
        for call in calls:
            if call.route == "segment" and call.status == 200 and call.name not in warmed:
                warmed.add(call.name)
                assert (await _send(client, call)).status_code == 200, call.name
        responses = await asyncio.gather(*(_send(client, call) for call in calls))

    problems = [p for call, r in zip(calls, responses, strict=True) if (p := _problem(call, r))]
    statuses: dict[int, int] = {}
    for response in responses:
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    assert not problems, f"statuses {statuses}:\n" + "\n".join(problems)
    served = sum(
        1 for c, r in zip(calls, responses, strict=True) if c.status == r.status_code == 200
    )
    assert served >= len(GOOD_ROUTES) * len(PHOTOS), statuses  # most good requests were served

    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        assert (await client.get("/api/v1/health")).status_code == 200
        assert (await client.get("/api/v1/ready")).status_code == 200

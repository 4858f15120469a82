"""Bad input gets a clear 4xx JSON error, never a 500, and the server stays up."""

from __future__ import annotations

import os

import httpx
import numpy as np
import pytest

from tests.crafted_images import png_header_only
from tests.e2e.conftest import SERVER_ENV, Server
from tests.e2e.helpers import assert_error, example_cases, example_path, png_bytes, post

pytestmark = pytest.mark.e2e
DOG = example_path(example_cases()["remove-dog"])
MAX_FILE_SIZE = int(SERVER_ENV["MAX_FILE_SIZE"])


@pytest.fixture(scope="module")
def client(server: Server) -> httpx.Client:
    with server.client() as client:
        yield client


def test_undecodable_image_is_400(client: httpx.Client) -> None:
    assert_error(
        post(client, "remove", b"not an image", {"point_coords": [1, 1]}), 400, "invalid_image"
    )


def test_malformed_request_json_is_400(client: httpx.Client) -> None:
    response = client.post(
        "/api/v1/remove", files={"image": ("d.jpg", DOG.read_bytes())}, data={"request": "{oops"}
    )
    assert_error(response, 400, "malformed_request", "not valid JSON")


def test_file_over_max_file_size_is_413(client: httpx.Client) -> None:
    too_big = os.urandom(MAX_FILE_SIZE + 1)
    assert_error(post(client, "remove", too_big, {"point_coords": [1, 1]}), 413, "file_too_large")


def test_declared_pixels_over_the_limit_are_413_before_decoding(client: httpx.Client) -> None:
    response = post(client, "remove", png_header_only(4000, 4000), {"point_coords": [1, 1]})
    assert_error(response, 413, "image_too_large", "4000x4000")


@pytest.mark.parametrize(
    ("route", "request_body", "code", "text"),
    [
        ("remove", {"point_coords": [900, 100]}, "validation_error", "outside the 800x534 image"),
        ("remove", {"box": [0, 0, 900, 100]}, "validation_error", "exceeds"),
        ("remove", {"output_format": "gif"}, "validation_error", "output_format"),
        ("remove", {}, "validation_error", "point_coords or box"),
        ("remove", {"point_coords": [1, 1], "extra": 1}, "validation_error", "extra"),
        ("remove", ["not", "an", "object"], "validation_error", "JSON object"),
        ("fill", {"point_coords": [10, 10], "text_prompt": ""}, "validation_error", "text_prompt"),
        ("fill", {"point_coords": [10, 10]}, "validation_error", "text_prompt"),
        ("fill", None, "validation_error", "text_prompt"),
        (
            "replace",
            {"point_coords": [10, 10], "text_prompt": "x" * 1001},
            "validation_error",
            "1000",
        ),
        (
            "segment",
            {"point_coords": [[1, 1]], "point_labels": [1, 1]},
            "validation_error",
            "point_labels",
        ),
    ],
)
def test_invalid_fields_are_422(
    client: httpx.Client, route: str, request_body: object, code: str, text: str
) -> None:
    response = post(client, route, DOG, request_body)  # type: ignore[arg-type]
    assert_error(response, 422, code, text)


def test_mask_of_another_size_is_422(client: httpx.Client) -> None:
    mask = png_bytes(np.full((10, 10), 255, np.uint8))
    assert_error(
        post(client, "remove", DOG, None, mask=mask), 422, "validation_error", "must match"
    )


def test_empty_mask_is_422(client: httpx.Client) -> None:
    mask = png_bytes(np.zeros((534, 800), np.uint8))
    assert_error(post(client, "remove", DOG, None, mask=mask), 422, "empty_mask")


def test_mask_and_prompt_together_is_422(client: httpx.Client) -> None:
    mask = png_bytes(np.full((534, 800), 255, np.uint8))
    response = post(client, "remove", DOG, {"point_coords": [1, 1]}, mask=mask)
    assert_error(response, 422, "validation_error", "not both")


def test_missing_image_and_text_instead_of_file(client: httpx.Client) -> None:
    assert_error(
        client.post("/api/v1/remove", data={"request": "{}"}, files={"mask": ("m", b"1")}),
        422,
        "validation_error",
        "`image` is required",
    )
    assert_error(
        # A text part named `image` (BentoML alone would try to download it as a URL).
        client.post("/api/v1/remove", files={"image": (None, "http://127.0.0.1:1/x.png")}),
        422,
        "validation_error",
        "uploaded as a file",
    )


def test_json_body_is_415(client: httpx.Client) -> None:
    assert_error(
        client.post("/api/v1/fill", json={"text_prompt": "a"}), 415, "unsupported_media_type"
    )


def test_server_is_still_healthy_after_the_bad_requests(server: Server) -> None:
    assert httpx.get(f"{server.url}/api/v1/ready", timeout=30).status_code == 200
    assert "Traceback" not in server.log.read_text()

"""The four flows over HTTP on the example photos: sizes, masks and the outside-mask invariant.

The tiny models' pixels are noise; what is checked is the contract: which region was
regenerated (the dilated SAM mask, or its inverse for replace), that nothing outside it
changed, sizes, metadata, seeds, and the embedding cache.
"""

from __future__ import annotations

import base64
import io
import subprocess

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.e2e.conftest import Server
from tests.e2e.helpers import (
    assert_outside_mask_untouched,
    decode_b64_image,
    decode_b64_mask,
    dilate,
    example_cases,
    example_path,
    load_rgb,
    png_bytes,
    post,
)

pytestmark = pytest.mark.e2e
CASES = example_cases()
DOG = CASES["remove-dog"]


@pytest.fixture(scope="module")
def client(server: Server) -> httpx.Client:
    with server.client() as client:
        yield client


def _segment(client: httpx.Client, image: bytes, request: dict) -> dict:
    response = post(client, "segment", image, request)
    assert response.status_code == 200, response.text
    return response.json()


def _ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert set(body) == {"success", "request_id", "timestamp", "image", "mask", "metadata"}
    return body


def _object_mask(segmented: dict) -> np.ndarray:
    return decode_b64_mask(segmented["masks"][segmented["best_index"]])


def test_work_order_curl_works_as_written(server: Server) -> None:
    """`curl -X POST .../api/v1/remove -F "image=@dog.jpg" -F 'request={...}'`, verbatim."""
    command = (
        f"curl -s -X POST {server.url}/api/v1/remove "
        f'-F "image=@{example_path(DOG)}" '
        """-F 'request={"point_coords": [100, 200], "dilate_kernel_size": 15}'"""
    )
    completed = subprocess.run(command, shell=True, capture_output=True, text=True, check=True)
    body = httpx.Response(200, content=completed.stdout).json()
    assert body["success"] is True, body
    assert (body["metadata"]["width"], body["metadata"]["height"]) == (800, 534)


def test_segment_returns_three_candidates_and_caches_the_embedding(client: httpx.Client) -> None:
    # A photo no other test sends, so that the first call is a cache miss.
    image = png_bytes(np.ascontiguousarray(load_rgb(example_path(DOG))[::-1]))
    request = {"point_coords": [[200, 84]], "point_labels": [1]}
    first = _segment(client, image, request)
    assert len(first["masks"]) == 3 and len(first["scores"]) == 3
    assert first["best_index"] == int(np.argmax(first["scores"]))
    for encoded in first["masks"]:
        assert decode_b64_mask(encoded).shape == (534, 800)
    assert first["metadata"]["embedding_cached"] is False
    assert first["metadata"]["models"]["sam"].startswith("sam-tiny:")
    second = _segment(client, image, {"point_coords": [[200, 84]]})
    assert second["metadata"]["embedding_cached"] is True
    assert second["masks"] == first["masks"] and second["scores"] == first["scores"]


def test_segment_takes_several_points_and_a_box(client: httpx.Client) -> None:
    image = example_path(DOG).read_bytes()
    body = _segment(
        client,
        image,
        {
            "point_coords": [[200, 450], [600, 100]],
            "point_labels": [1, 0],
            "box": [50, 300, 400, 530],
        },
    )
    assert len(body["masks"]) == 3


@pytest.mark.parametrize("case_id", ["remove-dog", "remove-baseball", "remove-boat"])
def test_remove_regenerates_exactly_the_dilated_sam_mask(
    client: httpx.Client, case_id: str
) -> None:
    case = CASES[case_id]
    image = example_path(case).read_bytes()
    prompt = {"point_coords": case["point_coords"], "point_labels": case["point_labels"]}
    segmented = _segment(client, image, prompt)
    body = _ok(
        post(client, "remove", image, {**prompt, "dilate_kernel_size": case["dilate_kernel_size"]})
    )
    original = load_rgb(example_path(case))
    result = decode_b64_image(body["image"])
    regenerated = decode_b64_mask(body["mask"])
    expected = dilate(_object_mask(segmented), case["dilate_kernel_size"])
    np.testing.assert_array_equal(regenerated, expected)
    assert_outside_mask_untouched(original, result, regenerated)
    assert not np.array_equal(result[regenerated], original[regenerated]), "LaMa changed nothing"
    metadata = body["metadata"]
    assert (metadata["width"], metadata["height"]) == (case["width"], case["height"])
    assert metadata["mask_index"] == segmented["best_index"]
    assert metadata["mask_score"] == pytest.approx(max(segmented["scores"]))
    assert metadata["dilate_kernel_size"] == case["dilate_kernel_size"]
    assert set(metadata["models"]) == {"sam", "lama"}
    assert metadata["device"] == "cpu" and metadata["strategy"] == "full"
    assert metadata["processing_time_ms"] > 0


def test_remove_honours_mask_index_and_default_dilation(client: httpx.Client) -> None:
    image = example_path(DOG).read_bytes()
    prompt = {"point_coords": DOG["point_coords"]}
    segmented = _segment(client, image, prompt)
    chosen = (segmented["best_index"] + 1) % 3
    body = _ok(post(client, "remove", image, {**prompt, "mask_index": chosen}))
    assert body["metadata"]["mask_index"] == chosen
    assert body["metadata"]["dilate_kernel_size"] == 15
    expected = dilate(decode_b64_mask(segmented["masks"][chosen]), 15)
    np.testing.assert_array_equal(decode_b64_mask(body["mask"]), expected)


def test_remove_with_an_uploaded_mask_skips_sam(client: httpx.Client) -> None:
    original = load_rgb(example_path(DOG))
    mask = np.zeros(original.shape[:2], np.uint8)
    mask[400:480, 150:260] = 255
    body = _ok(post(client, "remove", png_bytes(original), None, mask=png_bytes(mask)))
    regenerated = decode_b64_mask(body["mask"])
    np.testing.assert_array_equal(regenerated, dilate(mask > 0, 15))
    assert_outside_mask_untouched(original, decode_b64_image(body["image"]), regenerated)
    assert body["metadata"]["mask_index"] is None and body["metadata"]["mask_score"] is None
    assert set(body["metadata"]["models"]) == {"lama"}


@pytest.mark.parametrize(
    ("mask_box", "strategy"),
    [
        ((slice(1300, 1400), slice(500, 700)), "crop"),
        ((slice(0, 1500), slice(100, 1100)), "downscale"),
    ],
)
def test_remove_on_an_image_over_max_image_size(
    client: httpx.Client, mask_box: tuple[slice, slice], strategy: str
) -> None:
    """cat.jpg is 1170x1560; the test server's MAX_IMAGE_SIZE is 1024."""
    original = load_rgb(example_path(CASES["remove-cat"]))
    mask = np.zeros(original.shape[:2], np.uint8)
    mask[mask_box] = 255
    request = {"dilate_kernel_size": 0}
    body = _ok(post(client, "remove", png_bytes(original), request, mask=png_bytes(mask)))
    assert body["metadata"]["strategy"] == strategy
    assert (body["metadata"]["width"], body["metadata"]["height"]) == (1170, 1560)
    assert_outside_mask_untouched(original, decode_b64_image(body["image"]), mask > 0)


def test_fill_paints_the_dilated_mask_and_is_reproducible_with_a_seed(client: httpx.Client) -> None:
    case = CASES["fill-sample2"]
    image = example_path(case).read_bytes()
    request = {
        "point_coords": case["point_coords"],
        "text_prompt": case["text_prompt"],
        "num_inference_steps": 2,
        "seed": 1234,
    }
    segmented = _segment(client, image, {"point_coords": case["point_coords"]})
    first = _ok(post(client, "fill", image, request))
    original = load_rgb(example_path(case))
    regenerated = decode_b64_mask(first["mask"])
    np.testing.assert_array_equal(regenerated, dilate(_object_mask(segmented), 50))
    assert_outside_mask_untouched(original, decode_b64_image(first["image"]), regenerated)
    assert first["metadata"]["seed"] == 1234
    assert set(first["metadata"]["models"]) == {"sam", "sd"}
    again = _ok(post(client, "fill", image, request))
    assert again["image"] == first["image"]
    other = _ok(post(client, "fill", image, {**request, "seed": 99}))
    assert other["image"] != first["image"]


def test_fill_without_seed_reports_the_one_it_drew(client: httpx.Client) -> None:
    case = CASES["fill-sample4"]
    request = {"point_coords": case["point_coords"], "text_prompt": case["text_prompt"]}
    body = _ok(post(client, "fill", example_path(case).read_bytes(), request))
    assert isinstance(body["metadata"]["seed"], int)


def test_replace_keeps_the_object_bit_identical(client: httpx.Client) -> None:
    case = CASES["replace-man"]
    image = example_path(case).read_bytes()
    segmented = _segment(client, image, {"point_coords": case["point_coords"]})
    body = _ok(
        post(
            client,
            "replace",
            image,
            {"point_coords": case["point_coords"], "text_prompt": case["text_prompt"], "seed": 5},
        )
    )
    original = load_rgb(example_path(case))
    regenerated = decode_b64_mask(body["mask"])
    obj = _object_mask(segmented)
    np.testing.assert_array_equal(regenerated, ~obj)
    assert_outside_mask_untouched(original, decode_b64_image(body["image"]), regenerated)
    assert body["metadata"]["dilate_kernel_size"] == 0


@pytest.mark.parametrize(("output_format", "pil_format"), [("jpeg", "JPEG"), ("webp", "WEBP")])
def test_output_formats(client: httpx.Client, output_format: str, pil_format: str) -> None:
    original = load_rgb(example_path(DOG))
    mask = np.zeros(original.shape[:2], np.uint8)
    mask[10:40, 10:40] = 255
    body = _ok(
        post(
            client, "remove", png_bytes(original), {"output_format": output_format}, png_bytes(mask)
        )
    )
    with Image.open(io.BytesIO(base64.b64decode(body["image"]))) as image:
        assert image.format == pil_format and image.size == (800, 534)

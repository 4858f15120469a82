"""Crafted input through a real `bentoml serve`: every one answers in our JSON error body with
a 4xx (or works), and decoding keeps what the user sent (bit depth, alpha, ICC profile)."""

from __future__ import annotations

import base64
import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image, ImageCms

from tests.e2e.conftest import SERVER_ENV, Server
from tests.e2e.helpers import (
    assert_error,
    decode_b64_mask,
    dilate,
    example_cases,
    example_path,
    load_rgb,
    png_bytes,
    post,
)

pytestmark = pytest.mark.e2e
DOG = example_path(example_cases()["remove-dog"])
CLICK = {"point_coords": [[200, 300]]}


@pytest.fixture(scope="module")
def client(server: Server) -> httpx.Client:
    with server.client() as client:
        yield client


# --- request parsing -------------------------------------------------------------------------


def test_deeply_nested_request_json_is_a_prompt_400(client: httpx.Client) -> None:
    nested = "[" * 1_100 + "]" * 1_100
    response = client.post(
        "/api/v1/segment",
        files={"image": ("d.jpg", DOG.read_bytes())},
        data={"request": '{"point_coords": ' + nested + "}"},
        timeout=30,
    )
    assert_error(response, 400, "malformed_request", "nests more than")


@pytest.mark.parametrize("field", ["text_prompt", "negative_prompt"])
def test_lone_surrogate_in_a_prompt_is_422(client: httpx.Client, field: str) -> None:
    # Written as a JSON escape: valid JSON, but no valid Unicode text.
    fields = {"text_prompt": '"a cat"', field: '"a \\ud800 cat"'}
    raw = '{"point_coords": [[10, 10]], ' + ", ".join(f'"{k}": {v}' for k, v in fields.items())
    response = client.post(
        "/api/v1/fill",
        files={"image": ("d.jpg", DOG.read_bytes())},
        data={"request": raw + "}"},
    )
    assert_error(response, 422, "validation_error", field)


def test_mask_sent_to_segment_is_422(client: httpx.Client) -> None:
    mask = png_bytes(np.full((534, 800), 255, np.uint8))
    assert_error(post(client, "segment", DOG, CLICK, mask=mask), 422, "validation_error", "mask")


@pytest.mark.parametrize(
    "filename",
    ["x" * 300 + ".jpg", "dog\x00.jpg", "../../../../etc/passwd", "개.jpg"],
    ids=["300-chars", "nul", "traversal", "non-ascii"],
)
def test_the_file_name_does_not_matter(client: httpx.Client, filename: str) -> None:
    # Written by hand: HTTP clients escape a NUL in a file name, an attacker does not.
    boundary = "b0undary"
    body = b"".join(
        [
            f"--{boundary}\r\n".encode(),
            b'Content-Disposition: form-data; name="image"; filename="',
            filename.encode("utf-8"),
            b'"\r\nContent-Type: image/jpeg\r\n\r\n',
            DOG.read_bytes(),
            f"\r\n--{boundary}\r\n".encode(),
            b'Content-Disposition: form-data; name="request"\r\n\r\n',
            json.dumps(CLICK).encode(),
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    response = client.post(
        "/api/v1/segment",
        content=body,
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["masks"]) == 3


def test_media_type_in_any_casing_is_multipart(client: httpx.Client) -> None:
    request = client.build_request(
        "POST",
        "/api/v1/segment",
        files={"image": ("d.jpg", DOG.read_bytes())},
        data={"request": json.dumps(CLICK)},
    )
    boundary = request.headers["content-type"].split("boundary=")[1]
    request.headers["content-type"] = f"Multipart/Form-Data; boundary={boundary}"
    response = client.send(request)
    assert response.status_code == 200, response.text
    assert len(response.json()["masks"]) == 3


# --- routing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["segment", "remove", "fill", "replace"])
def test_get_on_a_post_route_is_a_json_405(client: httpx.Client, route: str) -> None:
    response = client.get(f"/api/v1/{route}")
    assert_error(response, 405, "method_not_allowed", "POST")
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize("path", ["/nope", "/api/v1/nope", "/api/v2/remove", "/docs/x"])
def test_unknown_paths_are_a_json_404(client: httpx.Client, path: str) -> None:
    assert_error(client.get(path), 404, "not_found", path)
    assert_error(client.post(path, json={}), 404, "not_found", path)


def test_bentoml_and_docs_routes_still_answer(client: httpx.Client) -> None:
    for path in ("/healthz", "/livez", "/readyz", "/metrics", "/docs", "/openapi.json"):
        assert client.get(path).status_code == 200, path


# --- decoding keeps what was sent ------------------------------------------------------------


def _remove_with_mask(client: httpx.Client, image: bytes, shape: tuple[int, int], fmt: str):
    mask = np.zeros(shape, np.uint8)
    mask[20:40, 30:60] = 255
    response = post(client, "remove", image, {"output_format": fmt}, mask=png_bytes(mask))
    assert response.status_code == 200, response.text
    body = response.json()
    output = Image.open(io.BytesIO(base64.b64decode(body["image"])))
    return output, decode_b64_mask(body["mask"]), mask > 0


def test_16_bit_grayscale_is_scaled_not_clipped(client: httpx.Client) -> None:
    # A dark 16-bit photo: 8-bit clipping would turn every pixel to 255.
    ramp = np.tile(np.linspace(0, 16_000, 120, dtype=np.uint16), (80, 1))
    output, regenerated, _ = _remove_with_mask(client, png_bytes(ramp), ramp.shape, "png")
    pixels = np.asarray(output.convert("L")).astype(int)
    expected = np.rint(ramp / 257)
    np.testing.assert_array_equal(pixels[~regenerated], expected[~regenerated])
    assert pixels[~regenerated].max() == 62  # 16000 / 257


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_rgba_and_icc_profile_come_back(client: httpx.Client, fmt: str) -> None:
    rgba = np.zeros((80, 120, 4), np.uint8)
    rgba[..., :3] = load_rgb(DOG)[:80, :120]
    rgba[..., 3] = np.tile(np.arange(120, dtype=np.uint8) * 2, (80, 1))
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    upload = io.BytesIO()
    Image.fromarray(rgba).save(upload, format="PNG", icc_profile=profile)
    output, regenerated, mask = _remove_with_mask(client, upload.getvalue(), (80, 120), fmt)
    np.testing.assert_array_equal(regenerated, dilate(mask, 15))
    assert output.mode == "RGBA" and output.info.get("icc_profile") == profile
    pixels = np.asarray(output)
    np.testing.assert_array_equal(pixels[..., 3][~regenerated], rgba[..., 3][~regenerated])
    assert (pixels[..., 3][regenerated] == 255).all()
    if fmt == "png":
        np.testing.assert_array_equal(pixels[~regenerated], rgba[~regenerated])


def test_float_image_outside_0_1_is_a_clear_422(client: httpx.Client) -> None:
    upload = io.BytesIO()
    Image.fromarray(np.full((8, 8), 300.0, np.float32)).save(upload, format="TIFF")
    response = post(client, "remove", upload.getvalue(), CLICK)
    assert_error(response, 422, "unsupported_image", "[0, 1]")


# --- OpenAPI tells the truth -----------------------------------------------------------------


def test_openapi_lists_the_real_statuses_and_limits(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    for route in ("segment", "remove", "fill", "replace"):
        operation = spec["paths"][f"/api/v1/{route}"]["post"]
        statuses = set(operation["responses"])
        assert {"400", "404", "405", "413", "415", "422", "503", "504"} <= statuses
        assert "500" not in statuses
        form = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert str(SERVER_ENV["MAX_FILE_SIZE"]) in form["properties"]["image"]["description"]
        assert ("mask" in form["properties"]) == (route != "segment")
        assert ("request" in form.get("required", [])) == (route != "remove")
    fill = spec["paths"]["/api/v1/fill"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert fill["schema"]["properties"]["mask"]["maxItems"] == 1
    request = fill["schema"]["properties"]["request"]
    assert request["properties"]["text_prompt"]["maxLength"] == 1000
    assert request["properties"]["point_coords"]["anyOf"][0]["maxItems"] == 32

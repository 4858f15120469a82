"""The editor's server side through a real server: /embedding and the SAM decoder as ONNX.

The parity test runs the served ONNX decoder with onnxruntime on the served embedding, as the
browser does, and compares its three candidates with /segment's for the same prompt, on a
landscape and a portrait photo (a decoder whose crop were frozen to one aspect ratio would
fail the other).
"""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest

from tests.e2e.conftest import Server
from tests.e2e.helpers import (
    assert_error,
    decode_b64_mask,
    example_cases,
    example_path,
    load_rgb,
    png_bytes,
    post,
)

pytestmark = pytest.mark.e2e
CASES = example_cases()
LANDSCAPE = CASES["remove-dog"]  # 800x534
PORTRAIT = CASES["remove-boat"]  # 503x640
# onnxruntime and torch add the same floats in other orders: logits within ~1e-6 of SAM's
# threshold can land on the other side. Measured: 0-5 pixels of a 400k-pixel mask.
MAX_DIFFERING_PIXELS = 20
DECODER = "/api/v1/sam-decoder.onnx"


@pytest.fixture(scope="module")
def client(server: Server) -> httpx.Client:
    with server.client() as client:
        yield client


@pytest.fixture(scope="module")
def decoder(client: httpx.Client):
    import onnxruntime

    response = client.get(DECODER)
    assert response.status_code == 200
    return onnxruntime.InferenceSession(response.content, providers=["CPUExecutionProvider"])


def _embedding(client: httpx.Client, image: bytes) -> dict:
    response = post(client, "embedding", image)
    assert response.status_code == 200, response.text
    return response.json()


def _decode_in_onnx(session, embedded: dict, points, labels, box=None) -> tuple:
    """What the browser does: SamOnnxModel's inputs, with coordinates in SAM's input frame."""
    height, width = embedded["original_size"]
    input_h, input_w = embedded["input_size"]
    coords = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    codes = list(labels)
    if box is None:
        coords, codes = np.vstack([coords, [[0.0, 0.0]]]), [*codes, -1]  # padding point
    else:
        coords, codes = np.vstack([coords, np.reshape(box, (2, 2))]), [*codes, 2, 3]
    scaled = coords * np.array([input_w / width, input_h / height])
    embedding = np.frombuffer(base64.b64decode(embedded["embedding"]), dtype="<f4")
    masks, scores, low_res = session.run(
        None,
        {
            "image_embeddings": embedding.reshape(embedded["shape"]),
            "point_coords": scaled.astype(np.float32)[None],
            "point_labels": np.asarray(codes, dtype=np.float32)[None],
            "mask_input": np.zeros((1, 1, 256, 256), np.float32),
            "has_mask_input": np.zeros(1, np.float32),
            "orig_im_size": np.array([height, width], np.float32),
        },
    )
    return masks, scores, low_res


def test_embedding_is_the_cached_sam_embedding(client: httpx.Client) -> None:
    rgb = load_rgb(example_path(LANDSCAPE))
    image = png_bytes(np.ascontiguousarray(rgb[:, ::-1]))  # a photo no other test sends
    first = _embedding(client, image)
    assert set(first) == {
        "success",
        "request_id",
        "timestamp",
        "embedding",
        "dtype",
        "shape",
        "input_size",
        "original_size",
        "model",
        "key",
        "metadata",
    }
    assert first["success"] is True
    assert first["dtype"] == "float32" and first["shape"] == [1, 256, 64, 64]
    raw = base64.b64decode(first["embedding"])
    assert len(raw) == 4 * 256 * 64 * 64
    array = np.frombuffer(raw, dtype="<f4")
    assert np.isfinite(array).all() and array.std() > 0
    assert first["original_size"] == [534, 800]
    assert first["input_size"] == [684, 1024]  # 534 * 1024 / 800 = 683.5, rounded as SAM does
    assert first["model"] == first["metadata"]["models"]["sam"]
    assert first["key"].startswith("inpaint:sam-embedding:")
    assert first["metadata"]["embedding_cached"] is False

    second = _embedding(client, image)
    assert second["metadata"]["embedding_cached"] is True
    assert second["key"] == first["key"] and second["embedding"] == first["embedding"]

    segmented = post(client, "segment", image, {"point_coords": [[300, 200]]})
    assert segmented.status_code == 200, segmented.text
    assert segmented.json()["metadata"]["embedding_cached"] is True  # no encoder run


def test_embedding_as_raw_bytes_is_the_json_array(client: httpx.Client) -> None:
    rgb = load_rgb(example_path(PORTRAIT))
    image = png_bytes(np.ascontiguousarray(rgb[::-1]))  # a photo no other test sends
    files = {"image": ("p.png", image, "image/png")}
    binary = client.post(
        "/api/v1/embedding", files=files, headers={"Accept": "application/octet-stream"}
    )
    assert binary.status_code == 200, binary.text
    assert binary.headers["content-type"] == "application/octet-stream"
    assert binary.headers["x-embedding-shape"] == "1,256,64,64"
    assert binary.headers["x-embedding-dtype"] == "float32"
    assert binary.headers["x-embedding-cached"] == "false"
    assert int(binary.headers["x-embedding-bytes"]) == len(binary.content) == 4 * 256 * 64 * 64
    assert binary.headers["x-original-size"] == "640,503"
    assert binary.headers["x-input-size"] == "1024,805"
    as_json = _embedding(client, image)  # the same photo, now cached: the same array
    assert binary.headers["x-embedding-key"] == as_json["key"]
    assert binary.headers["x-model"] == as_json["model"]
    assert binary.content == base64.b64decode(as_json["embedding"])
    refused = client.post(
        "/api/v1/embedding",
        files={"image": ("p.png", b"not an image", "image/png")},
        headers={"Accept": "application/octet-stream"},
    )
    assert_error(refused, 400, "invalid_image")


def test_embedding_of_a_portrait_photo_reports_its_sizes(client: httpx.Client) -> None:
    embedded = _embedding(client, example_path(PORTRAIT).read_bytes())
    assert embedded["original_size"] == [640, 503]
    assert embedded["input_size"] == [1024, 805]  # 503 * 1.6 = 804.8


def test_embedding_refuses_bad_input_in_our_shape(client: httpx.Client) -> None:
    assert_error(post(client, "embedding", b"not an image"), 400, "invalid_image")
    response = client.post("/api/v1/embedding", json={})
    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.parametrize("case", [LANDSCAPE, PORTRAIT], ids=["landscape", "portrait"])
@pytest.mark.parametrize(
    "prompt",
    [
        {"points": "three", "box": False},
        {"points": "one", "box": True},
    ],
    ids=["points", "point+box"],
)
def test_onnx_decoder_matches_segment(
    client: httpx.Client, decoder, case: dict, prompt: dict
) -> None:
    width, height = case["width"], case["height"]
    if prompt["points"] == "three":
        points = [[0.3 * width, 0.4 * height], [0.7 * width, 0.6 * height], [0.5, height - 2]]
        labels = [1, 1, 0]
    else:
        points, labels = [[0.5 * width, 0.5 * height]], [1]
    box = [0.2 * width, 0.15 * height, 0.8 * width, 0.9 * height] if prompt["box"] else None
    image = example_path(case).read_bytes()
    request = {"point_coords": points, "point_labels": labels, **({"box": box} if box else {})}
    response = post(client, "segment", image, request)
    assert response.status_code == 200, response.text
    served = response.json()

    masks, scores, low_res = _decode_in_onnx(
        decoder, _embedding(client, image), points, labels, box
    )
    assert masks.shape == (1, 4, height, width)  # the single-mask output, then 3 candidates
    assert scores.shape == (1, 4) and low_res.shape == (1, 4, 256, 256)
    np.testing.assert_allclose(scores[0, 1:], served["scores"], atol=1e-4)
    for index, encoded in enumerate(served["masks"]):
        expected = decode_b64_mask(encoded)
        got = masks[0, 1 + index] > 0.0  # SAM's mask_threshold
        assert expected.shape == got.shape == (height, width)
        assert 0 < expected.sum() < expected.size, "a trivial mask would prove nothing"
        differing = int((got != expected).sum())
        assert differing <= MAX_DIFFERING_PIXELS, (index, differing)


def test_decoder_is_served_with_an_etag(client: httpx.Client, decoder) -> None:
    first = client.get(DECODER)
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/octet-stream"
    etag = first.headers["etag"]
    assert etag.startswith('"') and len(first.content) > 1_000_000
    names = [i.name for i in decoder.get_inputs()]
    assert names == [
        "image_embeddings",
        "point_coords",
        "point_labels",
        "mask_input",
        "has_mask_input",
        "orig_im_size",
    ]
    assert [o.name for o in decoder.get_outputs()] == ["masks", "iou_predictions", "low_res_masks"]

    again = client.get(DECODER, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    other = client.get(DECODER, headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200 and other.content == first.content


def test_openapi_lists_the_editor_routes(server: Server) -> None:
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert "multipart/form-data" in paths["/api/v1/embedding"]["post"]["requestBody"]["content"]
    assert "422" in paths["/api/v1/embedding"]["post"]["responses"]
    decoder = paths[DECODER]["get"]["responses"]
    assert {"200", "304"} <= set(decoder)


def test_uint8_decoder_is_smaller_and_agrees_with_fp32(client: httpx.Client, decoder) -> None:
    """`?precision=uint8`: the quantized decoder, same interface, a fraction of the size, and
    masks that mostly agree with fp32's (the tiny random-weight model; the full-size
    figures are in docs/benchmarks.md)."""
    import onnxruntime

    fp32 = client.get(DECODER)
    response = client.get(DECODER, params={"precision": "uint8"})
    assert response.status_code == 200, response.text
    assert response.headers["etag"] != fp32.headers["etag"]
    assert len(response.content) < 0.5 * len(fp32.content)
    again = client.get(
        DECODER, params={"precision": "uint8"}, headers={"If-None-Match": response.headers["etag"]}
    )
    assert again.status_code == 304
    quantized = onnxruntime.InferenceSession(response.content, providers=["CPUExecutionProvider"])
    assert [i.name for i in quantized.get_inputs()] == [i.name for i in decoder.get_inputs()]
    case = LANDSCAPE
    embedded = _embedding(client, example_path(case).read_bytes())
    point = [[0.5 * case["width"], 0.5 * case["height"]]]
    exact = _decode_in_onnx(decoder, embedded, point, [1])[0][0, 1:] > 0
    approx = _decode_in_onnx(quantized, embedded, point, [1])[0][0, 1:] > 0
    assert 0 < exact.sum() < exact.size
    iou = (exact & approx).sum() / (exact | approx).sum()
    assert iou > 0.8, iou


def test_decoder_precision_is_validated(client: httpx.Client) -> None:
    response = client.get(DECODER, params={"precision": "int4"})
    assert_error(response, 422, "validation_error", "precision")

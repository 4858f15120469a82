"""Select by words (`text`, SAM 3) over HTTP on the tiny random-weight SAM 3.

Random weights score every query near 0.25 and draw noise masks: what is checked is the
contract (instances, their order and sizes, the union removed, the nothing-found error, the
clicks that filter, the features kept for a second word), not what is found.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.e2e.conftest import Server
from tests.e2e.helpers import (
    assert_error,
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
LOW = 0.1  # under the tiny model's ~0.25 scores: instances are found


@pytest.fixture(scope="module")
def client(server: Server) -> httpx.Client:
    with server.client() as client:
        yield client


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    # Flipped: a photo no other test sends, so its first query computes the features.
    return np.ascontiguousarray(load_rgb(example_path(example_cases()["remove-dog"]))[:, ::-1])


def _segment(client: httpx.Client, photo: np.ndarray, request: dict) -> dict:
    response = post(client, "segment", png_bytes(photo), request)
    assert response.status_code == 200, response.text
    return response.json()


def test_segment_returns_every_instance_best_first(client: httpx.Client, photo: np.ndarray) -> None:
    first = _segment(client, photo, {"text": "person", "threshold": LOW})
    instances = first["instances"]
    assert 1 <= len(instances) <= 8  # the tiny model's 8 queries
    scores = [i["score"] for i in instances]
    assert scores == sorted(scores, reverse=True) and min(scores) > LOW
    assert first["scores"] == scores and first["best_index"] == 0
    assert first["masks"] == [i["mask"] for i in instances]
    height, width = photo.shape[:2]
    for instance in instances:
        assert decode_b64_mask(instance["mask"]).shape == (height, width)
        assert len(instance["box"]) == 4
    assert first["metadata"]["models"]["sam3"].startswith("sam3-tiny:")
    # A new word on the same photo: the runner kept its image features.
    second = _segment(client, photo, {"text": "dog", "threshold": LOW})
    assert first["metadata"]["embedding_cached"] is False
    assert second["metadata"]["embedding_cached"] is True
    best = _segment(client, photo, {"text": "person", "threshold": LOW, "instances": "best"})
    assert best["instances"] == instances[:1]


def test_nothing_found_names_the_prompt_and_threshold(
    client: httpx.Client, photo: np.ndarray
) -> None:
    response = post(client, "segment", png_bytes(photo), {"text": "person", "threshold": 0.99})
    assert_error(response, 422, "nothing_selected", "'person' at threshold 0.99")
    response = post(client, "remove", png_bytes(photo), {"text": "person", "threshold": 0.99})
    assert_error(response, 422, "nothing_selected", "'person'")


def test_a_negative_click_removes_the_instances_under_it(
    client: httpx.Client, photo: np.ndarray
) -> None:
    instances = _segment(client, photo, {"text": "person", "threshold": LOW})["instances"]
    masks = [decode_b64_mask(i["mask"]) for i in instances]
    covered = np.sum(masks, axis=0)
    # A pixel some but not all instances cover.
    ys, xs = np.nonzero((covered > 0) & (covered < len(masks)))
    if len(ys) == 0:
        pytest.skip("every instance covers the same pixels: nothing to tell apart")
    x, y = int(xs[0]), int(ys[0])
    request = {"text": "person", "threshold": LOW, "point_coords": [[x, y]], "point_labels": [0]}
    response = post(client, "segment", png_bytes(photo), request)
    if response.status_code == 422:  # every instance lay under the click
        assert_error(response, 422, "nothing_selected", "none left by the clicks")
        return
    left = response.json()["instances"]
    assert len(left) == len(instances) - int(covered[y, x])
    assert all(not decode_b64_mask(i["mask"])[y, x] for i in left)


def test_remove_by_words_repaints_the_union_of_the_instances(
    client: httpx.Client, photo: np.ndarray
) -> None:
    instances = _segment(client, photo, {"text": "person", "threshold": LOW})["instances"]
    union = np.any([decode_b64_mask(i["mask"]) for i in instances], axis=0)
    request = {"text": "person", "threshold": LOW, "dilate_kernel_size": 15}
    response = post(client, "remove", png_bytes(photo), request)
    assert response.status_code == 200, response.text
    body = response.json()
    mask = decode_b64_mask(body["mask"])
    assert np.array_equal(mask, dilate(union, 15))
    assert set(body["metadata"]["models"]) == {"sam3", "lama"}
    assert body["metadata"]["mask_index"] is None
    assert_outside_mask_untouched(photo, decode_b64_image(body["image"]), mask)


@pytest.mark.parametrize(
    ("request_part", "text"),
    [
        ({"text": "x" * 201}, "text"),
        ({"text": "cat", "threshold": 1.5}, "threshold"),
        ({"text": "cat", "instances": "some"}, "instances"),
        ({"text": "cat", "mask_index": 0}, "mask_index"),
    ],
)
def test_bad_text_requests_are_422(
    client: httpx.Client, photo: np.ndarray, request_part: dict, text: str
) -> None:
    response = post(client, "segment", png_bytes(photo[:64, :64]), request_part)
    assert_error(response, 422, "validation_error", text)

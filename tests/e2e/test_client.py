"""The BentoML Python client works against the same routes and returns the same dict."""

from __future__ import annotations

import bentoml
import numpy as np
import pytest
from bentoml.exceptions import BentoMLException

from tests.e2e.conftest import Server
from tests.e2e.helpers import (
    decode_b64_image,
    decode_b64_mask,
    example_cases,
    example_path,
    load_rgb,
)

pytestmark = pytest.mark.e2e
DOG = example_cases()["remove-dog"]


@pytest.fixture(scope="module")
def client(server: Server) -> bentoml.SyncHTTPClient:
    with bentoml.SyncHTTPClient(server.url, timeout=120) as client:
        yield client


def test_remove_through_the_bentoml_client(client: bentoml.SyncHTTPClient) -> None:
    result = client.remove(
        image=example_path(DOG),
        request={"point_coords": DOG["point_coords"], "dilate_kernel_size": 15},
    )
    assert isinstance(result, dict) and result["success"] is True
    assert set(result) == {"success", "request_id", "timestamp", "image", "mask", "metadata"}
    image = decode_b64_image(result["image"])
    mask = decode_b64_mask(result["mask"])
    original = load_rgb(example_path(DOG))
    np.testing.assert_array_equal(image[~mask], original[~mask])


def test_segment_and_fill_through_the_client(client: bentoml.SyncHTTPClient) -> None:
    segmented = client.segment(image=example_path(DOG), request={"point_coords": [[200, 450]]})
    assert len(segmented["masks"]) == 3
    filled = client.fill(
        image=example_path(DOG),
        request={"point_coords": [[200, 450]], "text_prompt": "a cat", "seed": 3},
    )
    assert filled["metadata"]["seed"] == 3


def test_client_errors_carry_our_error_body(client: bentoml.SyncHTTPClient) -> None:
    with pytest.raises(BentoMLException) as raised:
        client.remove(image=example_path(DOG), request={"point_coords": [5000, 5000]})
    assert int(raised.value.error_code) == 422
    assert '"code":"validation_error"' in str(raised.value).replace(" ", "")

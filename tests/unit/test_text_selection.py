"""`text` selections: the request fields and how clicks and a box filter SAM 3's instances."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from api.schemas import RemoveRequest, SegmentRequest
from config.settings import get_settings
from flows.sam3_client import Instances
from flows.selection import filter_instances
from utils.exceptions import NothingSelectedException


def _found() -> Instances:
    """Three instances, best first: left half, top half, a small square at (8..12, 8..12)."""
    masks = np.zeros((3, 20, 20), dtype=bool)
    masks[0, :, :10] = True
    masks[1, :10, :] = True
    masks[2, 8:12, 8:12] = True
    boxes = np.array([[0, 0, 10, 20], [0, 0, 20, 10], [8, 8, 12, 12]], dtype=float)
    return Instances(masks, boxes, np.array([0.9, 0.8, 0.7]), cached=False)


def _request(**fields: object) -> SegmentRequest:
    return SegmentRequest.model_validate({"text": "person", **fields})


def test_text_fields_and_defaults() -> None:
    request = RemoveRequest.model_validate({"text": "person"})
    assert request.has_prompt
    assert (request.instances, request.threshold) == ("all", 0.5)
    assert _request(threshold=0, instances="best").threshold == 0.0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"text": "x" * (get_settings().max_text_length + 1)}, "text"),
        ({"text": ""}, "text"),
        ({"text": "   "}, "text is blank"),
        ({"threshold": 1.1}, "threshold"),
        ({"threshold": "0.5"}, "threshold"),
        ({"instances": "some"}, "instances"),
        ({"mask_index": 1}, "not with text"),
    ],
)
def test_bad_text_fields_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _request(**fields)


def test_all_and_best() -> None:
    assert list(filter_instances(_found(), _request()).scores) == [0.9, 0.8, 0.7]
    assert list(filter_instances(_found(), _request(instances="best")).scores) == [0.9]


def test_a_negative_click_removes_the_instances_under_it() -> None:
    kept = filter_instances(_found(), _request(point_coords=[[2, 15]], point_labels=[0]))
    assert list(kept.scores) == [0.8, 0.7]  # (2, 15) lies on the left half only


def test_positive_clicks_keep_only_the_instances_under_them() -> None:
    kept = filter_instances(_found(), _request(point_coords=[[15, 2]], point_labels=[1]))
    assert list(kept.scores) == [0.8]


def test_a_box_keeps_the_instances_centred_in_it() -> None:
    kept = filter_instances(_found(), _request(box=[6, 6, 14, 14]))
    assert list(kept.scores) == [0.7]


def test_nothing_left_names_prompt_threshold_and_the_clicks() -> None:
    with pytest.raises(NothingSelectedException, match="'person' at threshold 0.5 .3 found"):
        filter_instances(_found(), _request(point_coords=[[9, 9]], point_labels=[0]))
    empty = _found().take([])
    with pytest.raises(NothingSelectedException, match="'person' at threshold 0.3; lower"):
        filter_instances(empty, _request(threshold=0.3))

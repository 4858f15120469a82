"""Request validation: what the flows accept, and the messages for what they refuse."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.schemas import FillRequest, RemoveRequest, SegmentRequest


def test_single_point_is_accepted_as_a_list_of_points() -> None:
    request = RemoveRequest.model_validate({"point_coords": [100, 200], "dilate_kernel_size": 15})
    assert request.point_coords == [[100.0, 200.0]]
    assert request.dilate_kernel_size == 15
    assert request.output_format == "png"


def test_every_remove_field_has_a_default() -> None:
    request = RemoveRequest.model_validate({})
    assert not request.has_prompt
    assert request.dilate_kernel_size is None


def test_multi_point_prompt_with_labels_and_box() -> None:
    request = SegmentRequest.model_validate(
        {"point_coords": [[1, 2], [3, 4]], "point_labels": [1, 0], "box": [0, 0, 10, 10]}
    )
    assert request.point_labels == [1, 0]
    assert request.has_prompt


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"point_coords": [[1, 2]], "point_labels": [1, 0]}, "point_labels has 2 entries"),
        ({"point_labels": [1]}, "without point_coords"),
        ({"point_coords": [[1, 2, 3]]}, "at most 2 items"),
        ({"point_coords": []}, "at least 1 item"),
        ({"point_coords": [[1, 2]], "point_labels": [2]}, "point_labels"),
        ({"mask_index": 3}, "mask_index"),
        ({"output_format": "gif"}, "output_format"),
        ({"dilate_kernel_size": -1}, "dilate_kernel_size"),
        ({"dilate_kernel_size": 10_000}, "less than or equal to 200"),
        ({"unknown": 1}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_prompt_fields(payload: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RemoveRequest.model_validate(payload)


def test_too_many_points() -> None:
    with pytest.raises(ValidationError, match="at most 32 items"):
        RemoveRequest.model_validate({"point_coords": [[1, 1]] * 33})


def test_fill_requires_a_non_empty_bounded_prompt() -> None:
    with pytest.raises(ValidationError, match="text_prompt"):
        FillRequest.model_validate({"point_coords": [1, 2]})
    with pytest.raises(ValidationError, match="must not be empty"):
        FillRequest.model_validate({"point_coords": [1, 2], "text_prompt": " \t\u3000\x1c"})
    with pytest.raises(ValidationError, match="at most 1000 characters"):
        FillRequest.model_validate({"point_coords": [1, 2], "text_prompt": "x" * 1001})
    ok = FillRequest.model_validate({"point_coords": [1, 2], "text_prompt": "x" * 1000, "seed": 7})
    assert ok.seed == 7


@pytest.mark.parametrize(
    "payload",
    [
        {"num_inference_steps": 0},
        {"num_inference_steps": 101},
        {"guidance_scale": -1},
        {"seed": -5},
    ],
)
def test_fill_generation_bounds(payload: dict) -> None:
    with pytest.raises(ValidationError):
        FillRequest.model_validate({"text_prompt": "a cat", **payload})


def test_a_box_is_any_two_opposite_corners() -> None:
    request = SegmentRequest.model_validate({"box": [10, 20, 5, 2]})
    assert request.box == [5, 2, 10, 20]
    assert SegmentRequest.model_validate({"box": [3, 3, 3, 9]}).box == [3, 3, 3, 9]


@pytest.mark.parametrize("field", ["text_prompt", "negative_prompt"])
def test_lone_surrogates_in_prompts_are_refused(field: str) -> None:
    payload = {"text_prompt": "a cat", field: "a \ud800 cat"}
    # Pydantic refuses them for any length-bounded string; the tokenizer would raise a 500.
    with pytest.raises(ValidationError, match="valid string"):
        FillRequest.model_validate(payload)


def _request_schema(model: type) -> dict:
    return model.model_json_schema()


def test_published_limits_are_the_enforced_ones() -> None:
    props = _request_schema(FillRequest)["properties"]
    assert props["text_prompt"]["minLength"] == 1
    assert props["text_prompt"]["maxLength"] == 1000
    assert props["text_prompt"]["pattern"] == r"\S"
    assert props["negative_prompt"]["anyOf"][0]["maxLength"] == 1000
    assert props["num_inference_steps"]["anyOf"][0]["maximum"] == 100
    assert props["dilate_kernel_size"]["anyOf"][0]["maximum"] == 200
    assert props["point_coords"]["anyOf"][0]["maxItems"] == 32
    assert props["point_coords"]["anyOf"][0]["minItems"] == 1


def test_schema_ties_point_labels_to_point_coords() -> None:
    import jsonschema_rs  # comes with schemathesis

    validator = jsonschema_rs.validator_for(_request_schema(SegmentRequest))
    valid = [
        {"point_coords": [[1, 2], [3, 4]], "point_labels": [1, 0]},
        {"point_coords": [[1, 2]]},
        {"box": [0, 0, 1, 1], "point_labels": None},
    ]
    invalid = [
        {"point_coords": [[1, 2]], "point_labels": [1, 0]},
        {"point_labels": [1]},
        {"point_coords": None, "point_labels": [1]},
    ]
    for payload in valid:
        assert validator.is_valid(payload), payload
        SegmentRequest.model_validate(payload)
    for payload in invalid:
        assert not validator.is_valid(payload), payload
        with pytest.raises(ValidationError):
            SegmentRequest.model_validate(payload)

"""OpenAPI post-processing: the real error statuses, the limits and the part rules."""

from __future__ import annotations

from typing import Any

from api.app import document_routes
from api.schemas import FillRequest, SegmentRequest
from config.settings import get_settings


def _route(request_model: type, with_mask: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "image": {"type": "string", "format": "binary"},
        "request": {**request_model.model_json_schema(), "default": None},
    }
    if with_mask:
        properties["mask"] = {"type": "array", "items": {"type": "string", "format": "binary"}}
    schema = {"type": "object", "required": ["image"], "properties": properties}
    return {
        "post": {
            "requestBody": {"content": {"multipart/form-data": {"schema": schema}}},
            "responses": {"200": {}, "400": {}, "500": {}},
        }
    }


def _spec() -> dict[str, Any]:
    spec = {
        "paths": {
            "/api/v1/segment": _route(SegmentRequest, with_mask=False),
            "/api/v1/fill": _route(FillRequest, with_mask=True),
        }
    }
    return document_routes(spec, ["/api/v1/segment", "/api/v1/fill"])


def _form(spec: dict[str, Any], route: str) -> dict[str, Any]:
    return spec["paths"][route]["post"]["requestBody"]["content"]["multipart/form-data"]


def test_error_statuses_are_the_real_ones_without_500() -> None:
    responses = _spec()["paths"]["/api/v1/fill"]["post"]["responses"]
    assert set(responses) == {
        *("200", "400", "401", "404", "405", "413", "415", "422", "429", "503", "504")
    }
    assert responses["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }


def test_file_limits_and_one_mask() -> None:
    settings = get_settings()
    fill = _form(_spec(), "/api/v1/fill")
    image = fill["schema"]["properties"]["image"]["description"]
    assert str(settings.max_file_size) in image and str(settings.max_image_pixels) in image
    assert fill["schema"]["properties"]["mask"]["maxItems"] == 1
    assert fill["encoding"]["request"] == {"contentType": "application/json"}
    assert fill["encoding"]["image"]["contentType"].startswith("image/png")


def test_request_is_required_where_the_route_cannot_do_without() -> None:
    spec = _spec()
    fill, segment = _form(spec, "/api/v1/fill"), _form(spec, "/api/v1/segment")
    assert "request" in fill["schema"]["required"]  # text_prompt
    assert "default" not in fill["schema"]["properties"]["request"]
    assert "anyOf" not in fill["schema"]["properties"]["request"]  # a mask may replace prompts
    assert "request" in segment["schema"]["required"]
    prompt = segment["schema"]["properties"]["request"]["anyOf"]
    assert [rule["required"] for rule in prompt] == [["point_coords"], ["box"]]

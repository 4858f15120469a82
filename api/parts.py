"""The multipart parts of the routes, as BentoML route signatures declare them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, WithJsonSchema

from api.schemas import FillRequest, RemoveRequest, ReplaceRequest, SegmentRequest


def documented_json(model: type[BaseModel]) -> Any:
    """The `request` part: accepted as any JSON and validated by the flow itself (so that a
    bad field is our 422, not BentoML's 400), documented in OpenAPI as `model`."""
    return Annotated[Any, WithJsonSchema({**model.model_json_schema(), "title": model.__name__})]


SegmentRequestPart = documented_json(SegmentRequest)
RemoveRequestPart = documented_json(RemoveRequest)
FillRequestPart = documented_json(FillRequest)
ReplaceRequestPart = documented_json(ReplaceRequest)
# A `mask` file is optional: BentoML 1.4 cannot take Optional[Path], so it is a list of at
# most one (more is a 422).
MaskParts = list[Path]

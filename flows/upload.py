"""A request's parts, checked and decoded: the `request` JSON and the uploaded files."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

from api.observe import stage
from config.settings import Settings
from flows.limits import check_aspect_ratio
from utils.decoded_uploads import DecodedUploads
from utils.exceptions import ValidationException
from utils.image_io import DecodedImage, decode_image, decode_mask_image
from utils.masks import binarize_mask

Model = TypeVar("Model", bound=BaseModel)


@dataclass(frozen=True)
class Upload:
    source: DecodedImage  # the RGB the models see, plus alpha and ICC profile for the output
    mask: np.ndarray | None  # HxW bool, when the caller uploaded the object mask

    @property
    def image(self) -> np.ndarray:
        return self.source.rgb


def parse_request(model: type[Model], raw: Any) -> Model:
    """The `request` part validated as `model`: a bad field is our 422 naming it."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValidationException("`request` must be a JSON object")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'request'}: {error['msg']}"
            for error in exc.errors(include_url=False)
        )
        raise ValidationException(f"invalid request: {problems}") from exc


async def decode_upload(
    image: bytes, mask: bytes | None, decoded: DecodedUploads, settings: Settings
) -> Upload:
    """The photo (a repeat upload of the same bytes reuses its decode) and the optional mask,
    which must have the photo's size."""
    with stage("decode"):
        source = await asyncio.to_thread(
            decoded.decode,
            image,
            functools.partial(decode_image, max_pixels=settings.max_image_pixels),
        )
        height, width = source.rgb.shape[:2]
        check_aspect_ratio(height, width, settings.max_aspect_ratio)
        if mask is None:
            return Upload(source, None)
        raw_mask = await asyncio.to_thread(decode_mask_image, mask, settings.max_image_pixels)
        if raw_mask.shape[:2] != (height, width):
            raise ValidationException(
                f"the mask is {raw_mask.shape[1]}x{raw_mask.shape[0]} but the image is "
                f"{width}x{height}; they must match"
            )
        return Upload(source, await asyncio.to_thread(binarize_mask, raw_mask))


async def read_files(image: Path, masks: Sequence[Path]) -> tuple[bytes, list[bytes]]:
    """The uploaded files' bytes (BentoML has spooled them to disk), read off the event loop."""
    return await asyncio.to_thread(lambda: (image.read_bytes(), [m.read_bytes() for m in masks]))

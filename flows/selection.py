"""The object a flow works on: the uploaded mask, or SAM's candidate for the prompt."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from api.schemas import PromptRequest
from flows.sam_client import SamClient, candidate_masks
from flows.upload import Upload
from utils.exceptions import EmptyMaskException, ValidationException
from utils.windows import points_inside


@dataclass(frozen=True)
class Selection:
    mask: np.ndarray  # HxW bool
    index: int | None  # SAM's candidate; None when the caller uploaded the mask
    score: float | None


def check_prompt(request: PromptRequest, image: np.ndarray, alternative: str = "") -> None:
    """A prompt is given, and lies inside the image."""
    if not request.has_prompt:
        raise ValidationException(
            " ".join(["give point_coords or box in `request`", alternative]).strip()
        )
    height, width = image.shape[:2]
    if request.point_coords is not None:
        inside = points_inside(np.asarray(request.point_coords), (height, width))
        outside = [request.point_coords[i] for i in np.flatnonzero(~inside)]
        if outside:
            raise ValidationException(
                f"point(s) {outside} lie outside the {width}x{height} image "
                "(coordinates are [x, y] in pixels)"
            )
    if request.box is not None:
        x0, y0, x1, y1 = request.box
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise ValidationException(f"box {request.box} exceeds the {width}x{height} image")


async def check_selection(request: PromptRequest, upload: Upload) -> None:
    """What can be said of the object selection before SAM runs."""
    if upload.mask is None:
        check_prompt(request, upload.image, "or upload a mask")
    elif request.has_prompt or request.mask_index is not None:
        raise ValidationException(
            "send either a mask or SAM prompts (point_coords, box, mask_index), not both"
        )
    elif not await asyncio.to_thread(upload.mask.any):
        raise EmptyMaskException("the uploaded mask has no non-zero pixel")


async def select(sam: SamClient, request: PromptRequest, upload: Upload) -> Selection:
    """The uploaded mask, or SAM's best candidate (or `mask_index`) for the prompt."""
    await check_selection(request, upload)
    if upload.mask is not None:
        return Selection(upload.mask, None, None)
    image = upload.image
    found = await sam.candidates(image, request)
    index = int(np.argmax(found.scores)) if request.mask_index is None else request.mask_index
    mask = (await asyncio.to_thread(candidate_masks, found.logits[index : index + 1], image))[0]
    if not await asyncio.to_thread(mask.any):
        raise EmptyMaskException(
            f"SAM's mask {index} for this prompt is empty; click elsewhere, choose another "
            "mask_index or upload a mask"
        )
    return Selection(mask, index, float(found.scores[index]))

"""The object a flow works on: the uploaded mask, SAM's candidate for the prompt, or the
instances SAM 3 finds for `text` (filtered by the points and box sent with it)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from api.schemas import PromptRequest
from flows.sam3_client import Instances, Sam3Client
from flows.sam_client import SamClient, candidate_masks
from flows.upload import Upload
from utils.exceptions import EmptyMaskException, NothingSelectedException, ValidationException
from utils.windows import points_inside


class MaskAndPromptException(ValidationException):
    def __init__(self) -> None:
        super().__init__(
            "send either a mask or SAM prompts (point_coords, box, mask_index, text), not both"
        )


@dataclass(frozen=True)
class Selection:
    mask: np.ndarray  # HxW bool
    index: int | None  # SAM's candidate; None when the caller uploaded the mask or sent text
    score: float | None  # with text: the best instance's
    model: str | None = None  # the runner that selected it: "sam", "sam3"; None for an upload


def check_prompt(request: PromptRequest, size: tuple[int, int], alternative: str = "") -> None:
    """A prompt is given, and lies inside an image of `size` (height, width)."""
    if not request.has_prompt:
        raise ValidationException(
            " ".join(["give point_coords or box in `request`", alternative]).strip()
        )
    height, width = size
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
        check_prompt(request, upload.image.shape[:2], "or upload a mask")
    elif request.has_prompt or request.mask_index is not None:
        raise MaskAndPromptException()
    elif not await asyncio.to_thread(upload.mask.any):
        raise EmptyMaskException("the uploaded mask has no non-zero pixel")


def filter_instances(found: Instances, request: PromptRequest) -> Instances:
    """The instances `request` keeps: those its points and box leave (see PromptRequest.text),
    then all of them or the best; NothingSelectedException when none is left."""
    keep = np.ones(len(found.scores), dtype=bool)
    points = np.asarray(request.point_coords or [], dtype=float).reshape(-1, 2).astype(int)
    labels = np.asarray(request.point_labels or [1] * len(points), dtype=int)
    # on[k, n]: instance k's mask covers point n
    on = found.masks[:, points[:, 1], points[:, 0]] if len(points) else np.zeros((len(keep), 0))
    keep &= ~on[:, labels == 0].any(axis=1)
    if (labels == 1).any():
        keep &= on[:, labels == 1].any(axis=1)
    if request.box is not None:
        x0, y0, x1, y1 = request.box
        cx, cy = found.boxes[:, 0::2].mean(axis=1), found.boxes[:, 1::2].mean(axis=1)
        keep &= (cx >= x0) & (cx <= x1) & (cy >= y0) & (cy <= y1)
    kept = found.take(np.flatnonzero(keep))  # still best first
    if len(kept.scores) == 0:
        filtered = "" if keep.size == 0 else f" ({keep.size} found, none left by the clicks/box)"
        raise NothingSelectedException(
            f"nothing selected for text {request.text!r} at threshold {request.threshold}"
            f"{filtered}; lower the threshold or try other words"
        )
    return kept.take([0]) if request.instances == "best" else kept


async def select_text(
    sam3: Sam3Client | None, request: PromptRequest, image: np.ndarray
) -> Instances:
    """SAM 3's instances of `request.text` that the request keeps."""
    if sam3 is None:
        raise ValidationException("this server has no SAM 3 runner: `text` is not available")
    assert request.text is not None
    found = await sam3.instances(image, request.text, request.threshold)
    return await asyncio.to_thread(filter_instances, found, request)


async def select(
    sam: SamClient, request: PromptRequest, upload: Upload, sam3: Sam3Client | None = None
) -> Selection:
    """The uploaded mask, SAM's best candidate (or `mask_index`) for the prompt, or the union
    of the instances of `text` SAM 3 finds."""
    await check_selection(request, upload)
    if upload.mask is not None:
        return Selection(upload.mask, None, None)
    if request.text is not None:
        kept = await select_text(sam3, request, upload.image)
        union = await asyncio.to_thread(np.any, kept.masks, axis=0)
        if not union.any():
            raise EmptyMaskException(
                f"the instances of {request.text!r} have empty masks; try other words"
            )
        return Selection(union, None, float(kept.scores[0]), "sam3")
    image = upload.image
    found = await sam.candidates(image, request)
    index = int(np.argmax(found.scores)) if request.mask_index is None else request.mask_index
    mask = (await asyncio.to_thread(candidate_masks, found.logits[index : index + 1], image))[0]
    if not await asyncio.to_thread(mask.any):
        raise EmptyMaskException(
            f"SAM's mask {index} for this prompt is empty; click elsewhere, choose another "
            "mask_index or upload a mask"
        )
    return Selection(mask, index, float(found.scores[index]), "sam")

"""segment: SAM's candidate masks for a click (or points, or a box), with their scores; or,
for `text`, each instance SAM 3 finds (mask, box, score)."""

from __future__ import annotations

import asyncio

import numpy as np

from api.observe import stage
from api.schemas import (
    SegmentInstance,
    SegmentRequest,
    SegmentResponse,
    utc_timestamp,
)
from flows.context import FlowContext
from flows.responses import segment_metadata
from flows.sam_client import candidate_masks
from flows.selection import check_prompt, select_text
from flows.upload import Upload
from utils.image_io import encode_mask_base64


async def segment(ctx: FlowContext, request: SegmentRequest, upload: Upload) -> SegmentResponse:
    image = upload.image
    check_prompt(request, image.shape[:2])
    if request.text is not None:
        return await _segment_text(ctx, request, upload)
    found = await ctx.sam.candidates(image, request)
    with stage("encode"):
        # One thread per candidate, upsampled and encoded at once: numpy and OpenCV run
        # without the GIL, so the three share the cores.
        encoded = await asyncio.gather(
            *(asyncio.to_thread(_candidate_png, logits, image) for logits in found.logits)
        )
    return SegmentResponse(
        request_id="",
        timestamp=utc_timestamp(),
        masks=list(encoded),
        scores=[float(s) for s in found.scores],
        best_index=int(np.argmax(found.scores)),
        metadata=await segment_metadata(ctx, "sam", image, found.cached),
    )


async def _segment_text(
    ctx: FlowContext, request: SegmentRequest, upload: Upload
) -> SegmentResponse:
    image = upload.image
    kept = await select_text(ctx.sam3, request, image)
    with stage("encode"):
        encoded = await asyncio.gather(
            *(asyncio.to_thread(encode_mask_base64, m) for m in kept.masks)
        )
    instances = [
        SegmentInstance(mask=mask, box=[float(v) for v in box], score=float(score))
        for mask, box, score in zip(encoded, kept.boxes, kept.scores, strict=True)
    ]
    return SegmentResponse(
        request_id="",
        timestamp=utc_timestamp(),
        masks=list(encoded),
        scores=[instance.score for instance in instances],
        best_index=0,  # best first
        instances=instances,
        metadata=await segment_metadata(ctx, "sam3", image, kept.cached),
    )


def _candidate_png(logits: np.ndarray, image: np.ndarray) -> str:
    """One candidate's 256x256 logits as the photo-size PNG mask, base64."""
    return encode_mask_base64(candidate_masks(logits[None], image)[0])

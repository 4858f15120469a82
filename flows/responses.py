"""The response of an inpainting flow: the painted photo in its own format, and the region."""

from __future__ import annotations

import asyncio

import numpy as np

from api.observe import stage
from api.schemas import (
    InpaintMetadata,
    InpaintRequest,
    InpaintResponse,
    SegmentMetadata,
    utc_timestamp,
)
from flows.context import FlowContext
from flows.plan import Painted
from flows.selection import Selection
from flows.upload import Upload
from utils.image_io import encode_mask_base64, encode_result, to_base64


async def segment_metadata(
    ctx: FlowContext, kind: str, image: np.ndarray, cached: bool
) -> SegmentMetadata:
    """The metadata of a SAM answer (segment, embedding) by the runner `kind`."""
    height, width = image.shape[:2]
    return SegmentMetadata(
        width=width,
        height=height,
        processing_time_ms=0.0,
        models=await ctx.facts.tags((kind,)),
        device=await ctx.facts.device(kind),
        embedding_cached=cached,
    )


async def inpaint_response(
    ctx: FlowContext,
    request: InpaintRequest,
    upload: Upload,
    painted: Painted,
    selection: Selection,
    *,
    model: str,
    kernel: int,
    strategy: str,
    seed: int | None = None,
) -> InpaintResponse:
    height, width = painted.image.shape[:2]

    def encode() -> tuple[str, str]:
        result = encode_result(upload.source, painted.image, painted.region, request.output_format)
        return to_base64(result), encode_mask_base64(painted.region)

    with stage("encode"):
        image_b64, mask_b64 = await asyncio.to_thread(encode)
    kinds = (model,) if selection.model is None else (selection.model, model)
    return InpaintResponse(
        request_id="",
        timestamp=utc_timestamp(),
        image=image_b64,
        mask=mask_b64,
        metadata=InpaintMetadata(
            width=width,
            height=height,
            processing_time_ms=0.0,
            mask_index=selection.index,
            mask_score=selection.score,
            models=await ctx.facts.tags(kinds),
            device=await ctx.facts.device(model),
            dilate_kernel_size=kernel,
            seed=seed,
            strategy=strategy,
        ),
    )

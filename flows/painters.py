"""The painters the inpainting flows hand to flows.plan.paint_region: LaMa and SD."""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid

import numpy as np

from api.observe import stage
from api.schemas import GenerateRequest, InpaintResponse
from flows.context import FlowContext, current_request
from flows.plan import Painter, Window, paint_region
from flows.responses import inpaint_response
from flows.selection import Selection
from flows.upload import Upload
from jobs.model import current_job_id
from runners.client import call_runner
from runners.lama import LamaJob
from runners.sd import SdJob
from utils.masks import mask_to_png_array

logger = logging.getLogger("inpaint.paint")


def lama_painter(ctx: FlowContext) -> Painter:
    async def paint(part: np.ndarray, part_mask: np.ndarray) -> np.ndarray:
        item = np.dstack([part, mask_to_png_array(part_mask)])
        job = LamaJob(item=item, deadline=ctx.deadline())
        with stage("inpaint"):
            painted = (await call_runner(ctx.runners.lama.to_async.inpaint, [job]))[0]
        if painted.size == 0:
            raise TimeoutError  # the runner skipped it: past the deadline
        return painted

    return paint


def sd_painter(ctx: FlowContext, request: GenerateRequest, seed: int) -> Painter:
    async def paint(part: np.ndarray, part_mask: np.ndarray) -> np.ndarray:
        job = sd_job(ctx, request, part, part_mask, seed)
        try:
            with stage("inpaint"):
                generated = (await call_runner(ctx.runners.sd.to_async.inpaint, [job]))[0]
        except asyncio.CancelledError:  # the caller went away: the runner stops at its next step
            logger.info("request %s gave up: cancelling SD job %s", current_request(), job.job_id)
            ctx.background.run(call_runner(ctx.runners.sd.to_async.cancel, job.job_id))
            raise
        if generated.size == 0:
            raise TimeoutError  # the runner skipped it: past the deadline
        return generated

    return paint


async def generate(
    ctx: FlowContext,
    request: GenerateRequest,
    upload: Upload,
    selection: Selection,
    region: np.ndarray,
    window: Window,
    kernel: int,
) -> InpaintResponse:
    """fill's and replace's last steps: the seed (the request's, else a random one, reported),
    SD on the window, the region pasted back, the response."""
    seed = request.seed if request.seed is not None else secrets.randbelow(2**32)
    painted = await paint_region(upload.image, region, window, sd_painter(ctx, request, seed))
    return await inpaint_response(
        ctx,
        request,
        upload,
        painted,
        selection,
        model="sd",
        kernel=kernel,
        strategy=window.kind,
        seed=seed,
    )


def sd_job(
    ctx: FlowContext, request: GenerateRequest, image: np.ndarray, mask: np.ndarray, seed: int
) -> SdJob:
    settings = ctx.settings
    guidance = request.guidance_scale
    return SdJob(
        image=image,
        mask=mask,
        prompt=request.text_prompt,
        negative_prompt=request.negative_prompt,
        num_inference_steps=request.num_inference_steps or settings.default_inference_steps,
        guidance_scale=settings.default_guidance_scale if guidance is None else guidance,
        seed=seed,
        # A job's own id (jobs/), else one for this call: `cancel` names it.
        job_id=current_job_id.get() or uuid.uuid4().hex,
        deadline=ctx.deadline(),
    )

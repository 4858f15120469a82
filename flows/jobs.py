"""A flow as a job (jobs/): checked at submit as its synchronous route checks it, stored as the
request JSON and the encoded upload, and run by whichever replica's worker takes it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request

from api.schemas import PromptRequest
from config.settings import Settings
from flows.admission import Admission, stamped
from flows.context import FlowContext, begin_request
from flows.limits import check_aspect_ratio
from flows.registry import FLOWS, Flow, prepare
from flows.selection import MaskAndPromptException, check_prompt
from flows.upload import parse_request
from jobs.http import JobsApi
from jobs.model import JobRecord
from utils.exceptions import InpaintError, ValidationException
from utils.image_io import probe_image


async def submit_job(
    ctx: FlowContext,
    jobs: JobsApi,
    http: Request,
    flow: Flow,
    request_id: str,
    raw_request: Any,
    image: bytes,
    masks: list[bytes],
) -> JobRecord:
    """Refuse what the synchronous route would refuse from the headers, then queue. Nothing
    is decoded here: a 36-MP submit costs milliseconds and holds no pixels; a corrupt body or
    an empty mask fails the job when it runs, with the synchronous route's error."""
    raw, webhook = await jobs.split_request(raw_request)
    if len(masks) > 1:
        raise ValidationException("send at most one `mask` file")
    files = {"image": image, **({"mask": masks[0]} if masks else {})}
    request = await asyncio.to_thread(check_submission, ctx.settings, flow, raw, files)
    steps = getattr(request, "num_inference_steps", None) or ctx.settings.default_inference_steps
    return await jobs.submit(http, flow.name, request_id, raw or {}, webhook, files, steps)


def check_submission(
    settings: Settings, flow: Flow, raw: Any, files: dict[str, bytes]
) -> PromptRequest:
    """A job's `request` and upload, checked from the image headers alone."""
    request = parse_request(flow.request, raw)
    height, width = probe_image(files["image"], settings.max_image_pixels)
    check_aspect_ratio(height, width, settings.max_aspect_ratio)
    if "mask" not in files:
        check_prompt(request, (height, width), "or upload a mask")
        return request
    mask_size = probe_image(files["mask"], settings.max_image_pixels, "mask")
    if mask_size != (height, width):
        raise ValidationException(
            f"the mask is {mask_size[1]}x{mask_size[0]} but the image is {width}x{height}; "
            "they must match"
        )
    if request.has_prompt or request.mask_index is not None:
        raise MaskAndPromptException()
    return request


async def execute_job(
    ctx: FlowContext,
    admission: Admission,
    route: str,
    raw_request: dict[str, Any],
    files: dict[str, bytes],
    job_id: str,
) -> dict[str, Any]:
    """Run one job (jobs.model.Execute): the route's flow on the stored upload, within the
    processing timeout; its response body as JSON, or its error raised."""
    flow = FLOWS[route]
    begin_request(job_id, ctx.settings.processing_timeout_s)
    begun = time.perf_counter()
    masks = [files["mask"]] if "mask" in files else []

    async def work() -> BaseModel:
        request, upload = await prepare(ctx, flow, raw_request, files["image"], masks)
        return await flow.run(ctx, request, upload)

    outcome = stamped(await admission.attempt(route, job_id, work, admit=False), job_id, begun)
    if isinstance(outcome, InpaintError):
        raise outcome
    return outcome.model_dump(mode="json")

"""A flow as a job (jobs/): checked at submit as its synchronous route checks it, stored as the
request JSON and the encoded upload, and run by whichever replica's worker takes it."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request

from flows.admission import Admission, stamped
from flows.context import FlowContext, begin_request
from flows.registry import FLOWS, Flow, prepare
from flows.selection import check_selection
from jobs.http import JobsApi
from jobs.model import JobRecord
from utils.exceptions import InpaintError


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
    """Refuse what the synchronous route would refuse before any model runs, then queue."""
    raw, webhook = await jobs.split_request(raw_request)
    request, upload = await prepare(ctx, flow, raw, image, masks)
    await check_selection(request, upload)
    files = {"image": image, **({"mask": masks[0]} if masks else {})}
    steps = getattr(request, "num_inference_steps", None) or ctx.settings.default_inference_steps
    return await jobs.submit(http, flow.name, request_id, raw or {}, webhook, files, steps)


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

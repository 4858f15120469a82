"""Submitting a flow as a job: the input is checked as the synchronous route checks it (before
answering 202), then the flow runs in the job table (api.jobs)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from api.jobs import JobAccepted, JobStore
from api.schemas import utc_timestamp
from flows.admission import Admission, stamped
from flows.context import FlowContext
from flows.registry import API_PREFIX, Flow, prepare
from flows.selection import check_selection


async def submit_job(
    ctx: FlowContext,
    jobs: JobStore,
    admission: Admission,
    flow: Flow,
    request_id: str,
    raw_request: Any,
    image: bytes,
    masks: Sequence[bytes],
) -> JobAccepted:
    request, upload = await prepare(ctx, flow, raw_request, image, masks)
    await check_selection(request, upload)

    async def work() -> Any:
        begun = time.perf_counter()
        outcome = await admission.attempt(
            flow.name, request_id, lambda: flow.run(ctx, request, upload), admit=False
        )
        return stamped(outcome, request_id, begun)

    steps = request.num_inference_steps or ctx.settings.default_inference_steps
    job = jobs.submit(flow.name, request_id, steps, work)
    return JobAccepted(
        request_id=request_id,
        timestamp=utc_timestamp(),
        job_id=job.id,
        state=job.state,
        status_url=f"{API_PREFIX}/jobs/{job.id}",
        result_url=f"{API_PREFIX}/jobs/{job.id}/result",
    )

"""The seam between the jobs API and where jobs live: the `JobStore` protocol, and what both
stores share (running one job through the service's `Execute`, waiting for a job)."""

from __future__ import annotations

import asyncio
import logging
import time
from http import HTTPStatus
from typing import Any, Protocol

from jobs.model import (
    FINISHED,
    Execute,
    JobRecord,
    JobRunnerLostException,
    Submission,
    current_job_id,
    error_document,
)
from utils.exceptions import InpaintError

logger = logging.getLogger("inpaint.jobs")
WAIT_POLL_S = 0.1


class JobStore(Protocol):
    """Where jobs live. Every method that names a job takes its owner: another owner's job
    is `job_not_found`."""

    async def start(self, execute: Execute) -> None:
        """Begin running jobs (this replica's worker) with the service's `execute`."""

    async def close(self) -> None: ...

    async def submit(self, submission: Submission) -> JobRecord:
        """Queue a job (or, for a repeated Idempotency-Key, return the first one)."""

    async def get(self, job_id: str, owner: str) -> JobRecord:
        """The job's record, with its progress brought up to date."""

    async def result(self, job_id: str, owner: str) -> tuple[dict[str, Any], str]:
        """The finished job's response body and request id; raises what the client gets."""

    async def cancel(self, job_id: str, owner: str) -> JobRecord: ...

    def health(self) -> dict[str, Any]:
        """For /ready and the metrics: where jobs live, and whether that store answers."""


async def wait_finished(store: JobStore, job_id: str, owner: str, timeout_s: float) -> JobRecord:
    """The job's record once finished, or as it is after `timeout_s` (Prefer: wait)."""
    deadline = time.monotonic() + timeout_s
    while True:
        record = await store.get(job_id, owner)
        if record.state in FINISHED or time.monotonic() >= deadline:
            return record
        await asyncio.sleep(min(WAIT_POLL_S, max(deadline - time.monotonic(), 0)))


async def run_one(
    execute: Execute, record: JobRecord, request: dict[str, Any], files: dict[str, bytes]
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(result document, None) or (None, error document) for one run of a job."""
    token = current_job_id.set(record.id)
    try:
        return await execute(record.route, request, files, record.id), None
    except InpaintError as error:
        if error.status == HTTPStatus.SERVICE_UNAVAILABLE:
            # "Retry later" is wrong for a job: this run is over, and nothing retries it.
            error = JobRunnerLostException(
                f"the runner serving job {record.id} gave no answer ({error.message}); "
                "submit the job again"
            )
        return None, error_document(error)
    except Exception as exc:
        logger.exception("job %s failed", record.id)
        return None, error_document(InpaintError(f"the job failed unexpectedly: {exc!r}"))
    finally:
        current_job_id.reset(token)

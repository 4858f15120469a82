"""Fill and replace as jobs: submit, follow step k of n, fetch the result, cancel.

Jobs live in the entry process that accepted them: a bounded table whose finished jobs expire
after JOB_TTL_S, with at most JOB_MAX_RUNNING of them running at once (the rest wait,
`queued`). A job runs the very flow of its synchronous route; while it paints, its status
asks the SD runner how far the pipeline got (`SdRunner.progress`, by job id), and a cancel
sets the runner's flag that stops the pipeline at its next step.

With several entry replicas a job is known only to the replica that accepted it: route a
client's job calls to one replica (sticky sessions), or run one entry replica.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Literal

from pydantic import BaseModel, Field

from api.schemas import ErrorDetail
from utils.exceptions import InpaintError, OverloadedException

logger = logging.getLogger("inpaint.jobs")

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset({"done", "failed", "cancelled"})
JOBS_PREFIX = "/api/v1/jobs"

# The job whose flow is running in this asyncio task; the flow tags its SD work with it.
current_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "current_job_id", default=None
)

Outcome = BaseModel | InpaintError
ProgressSource = Callable[[str], Awaitable[dict[str, Any] | None]]
Canceller = Callable[[str], Awaitable[None]]


class JobNotFoundException(InpaintError):
    status = HTTPStatus.NOT_FOUND
    code = "job_not_found"


class JobNotDoneException(InpaintError):
    status = HTTPStatus.CONFLICT
    code = "job_not_done"


class JobCancelledException(InpaintError):
    status = HTTPStatus.GONE
    code = "job_cancelled"


class JobAccepted(BaseModel):
    success: Literal[True] = True
    request_id: str
    timestamp: str
    job_id: str
    state: JobState
    status_url: str
    result_url: str


class JobStatus(BaseModel):
    success: Literal[True] = True
    job_id: str
    route: Literal["fill", "replace"]
    state: JobState
    progress: float = Field(ge=0, le=1, description="step / total_steps; 1 when done")
    step: int = Field(description="denoising steps finished")
    total_steps: int
    eta_s: float | None = Field(description="seconds left, estimated from the steps so far")
    error: ErrorDetail | None = Field(description="why the job failed")
    created_at: str
    updated_at: str


def _iso(epoch_s: float) -> str:
    """The API's timestamp format (api.schemas.utc_timestamp) for a moment in the past."""
    stamp = datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


@dataclass
class Job:
    id: str
    route: str
    request_id: str
    total_steps: int
    state: JobState = "queued"
    step: int = 0
    eta_s: float | None = None
    outcome: Outcome | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    task: asyncio.Task | None = None

    def move(self, state: JobState) -> None:
        self.state, self.updated_at = state, time.time()

    def status(self) -> JobStatus:
        error = self.outcome if isinstance(self.outcome, InpaintError) else None
        done = self.state == "done"
        step = self.total_steps if done else self.step
        return JobStatus(
            job_id=self.id,
            route=self.route,
            state=self.state,
            progress=1.0 if done else round(step / max(self.total_steps, 1), 4),
            step=step,
            total_steps=self.total_steps,
            eta_s=0.0 if done else (self.eta_s if self.state == "running" else None),
            error=ErrorDetail(code=error.code, message=error.message) if error else None,
            created_at=_iso(self.created_at),
            updated_at=_iso(self.updated_at),
        )

    def result(self) -> BaseModel:
        """The finished job's response body, or the error a client gets instead."""
        if self.state == "cancelled":
            raise JobCancelledException(f"job {self.id} was cancelled; it has no result")
        if isinstance(self.outcome, InpaintError):
            raise self.outcome
        if self.outcome is None:
            raise JobNotDoneException(
                f"job {self.id} is {self.state}; poll {JOBS_PREFIX}/{self.id} until it is done"
            )
        return self.outcome


class JobStore:
    """The entry's jobs. `progress(job_id)` and `cancel(job_id)` talk to the SD runner."""

    def __init__(
        self,
        max_jobs: int,
        ttl_s: float,
        max_running: int,
        progress: ProgressSource,
        cancel: Canceller,
    ) -> None:
        self.max_jobs = max_jobs
        self.ttl_s = ttl_s
        self._slots = asyncio.Semaphore(max_running)
        self._progress = progress
        self._cancel = cancel
        self._jobs: OrderedDict[str, Job] = OrderedDict()

    def __len__(self) -> int:
        return len(self._jobs)

    def submit(
        self, route: str, request_id: str, total_steps: int, work: Callable[[], Awaitable[Outcome]]
    ) -> Job:
        """Queue `work` (the route's flow, errors returned, not raised) as a new job."""
        self._make_room()
        job = Job(secrets.token_urlsafe(12), route, request_id, total_steps)
        self._jobs[job.id] = job
        job.task = asyncio.create_task(self._run(job, work), name=f"job-{job.id}")
        logger.info("job %s (%s, request %s) queued", job.id, route, request_id)
        return job

    def get(self, job_id: str) -> Job:
        self._expire()
        job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFoundException(
                f"no job {job_id!r}: it never existed here, or it finished more than "
                f"{self.ttl_s:g} s ago"
            )
        return job

    async def refresh(self, job: Job) -> Job:
        """Bring a running job's step count up to date from the SD runner."""
        # A cancelled job keeps reporting where the runner stopped it.
        if job.state not in ("running", "cancelled"):
            return job
        try:
            async with asyncio.timeout(5):
                report = await self._progress(job.id)
        except Exception as exc:  # progress is best effort; the job itself is unaffected
            logger.warning("progress of job %s unavailable: %r", job.id, exc)
            return job
        if report:
            if job.state == "running" and int(report["step"]) != job.step:
                job.updated_at = time.time()
            job.step, job.eta_s = int(report["step"]), report["eta_s"]
            job.total_steps = int(report["total_steps"]) or job.total_steps
        return job

    async def cancel(self, job: Job) -> Job:
        """Stop a queued or running job; a finished one stays as it is."""
        if job.state in FINISHED:
            return job
        job.move("cancelled")
        if job.task is not None:
            job.task.cancel()
        try:
            async with asyncio.timeout(5):
                await self._cancel(job.id)
        except Exception as exc:
            logger.warning("could not tell the SD runner to stop job %s: %r", job.id, exc)
        logger.info("job %s cancelled at step %d of %d", job.id, job.step, job.total_steps)
        return job

    async def _run(self, job: Job, work: Callable[[], Awaitable[Outcome]]) -> None:
        current_job_id.set(job.id)  # this task's own context
        try:
            async with self._slots:
                job.move("running")
                outcome = await work()
        except asyncio.CancelledError:
            return  # cancel() already recorded it
        if job.state == "cancelled":
            return
        job.outcome = outcome
        job.move("failed" if isinstance(outcome, InpaintError) else "done")
        logger.info("job %s %s", job.id, job.state)

    def _expire(self) -> None:
        deadline = time.time() - self.ttl_s
        for job_id in [j.id for j in self._jobs.values() if j.state in FINISHED]:
            if self._jobs[job_id].updated_at < deadline:
                del self._jobs[job_id]

    def _make_room(self) -> None:
        self._expire()
        while len(self._jobs) >= self.max_jobs:
            finished = next((j for j in self._jobs.values() if j.state in FINISHED), None)
            if finished is None:
                raise OverloadedException(
                    f"{self.max_jobs} jobs are queued or running; retry when one has finished"
                )
            del self._jobs[finished.id]

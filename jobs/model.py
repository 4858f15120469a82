"""What a job is, its documents (accepted, status), and the errors of the jobs API."""

from __future__ import annotations

import contextvars
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Literal

from pydantic import BaseModel, Field

from api.schemas import ErrorDetail
from utils.exceptions import InpaintError

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset({"done", "failed", "cancelled"})
ROUTES = ("fill", "replace", "remove")
JOBS_PREFIX = "/api/v1/jobs"

# Runs one job: (route, request JSON, upload bytes by part name, job id) -> the synchronous
# route's response body, or raises the InpaintError that route would answer.
Execute = Callable[[str, dict[str, Any], dict[str, bytes], str], Awaitable[dict[str, Any]]]
# Step k of n of a running job from wherever the SD runner reports it; None when unknown.
ProgressSource = Callable[[str], Awaitable[dict[str, Any] | None]]
Canceller = Callable[[str], Awaitable[None]]

# The job whose flow is running in this asyncio task; the flow tags its SD work with it.
current_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "current_job_id", default=None
)


class JobNotFoundException(InpaintError):
    status = HTTPStatus.NOT_FOUND
    code = "job_not_found"


class JobNotDoneException(InpaintError):
    status = HTTPStatus.CONFLICT
    code = "job_not_done"


class JobCancelledException(InpaintError):
    status = HTTPStatus.GONE
    code = "job_cancelled"


class TooManyJobsException(InpaintError):
    """This caller has JOB_MAX_PER_KEY jobs outstanding."""

    status = HTTPStatus.TOO_MANY_REQUESTS
    code = "too_many_jobs"


class IdempotencyConflictException(InpaintError):
    status = HTTPStatus.CONFLICT
    code = "idempotency_key_reused"


class JobRunnerLostException(InpaintError):
    """The process running the job died, and no retry finished it: it will never finish."""

    status = HTTPStatus.BAD_GATEWAY
    code = "job_runner_lost"


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
    route: Literal["fill", "replace", "remove"]
    state: JobState
    progress: float = Field(ge=0, le=1, description="step / total_steps; 1 when done")
    step: int = Field(description="denoising steps finished")
    total_steps: int
    eta_s: float | None = Field(description="seconds left, estimated from the steps so far")
    error: ErrorDetail | None = Field(description="why the job failed")
    created_at: str
    updated_at: str


def iso(epoch_s: float) -> str:
    """The API's timestamp format (api.schemas.utc_timestamp) for a moment in the past."""
    stamp = datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


@dataclass(frozen=True)
class Submission:
    """A job as submitted: everything needed to run it anywhere."""

    route: str
    request: dict[str, Any]
    files: dict[str, bytes]  # "image", and "mask" when one was uploaded
    owner: str  # "key:<id>" or "ip:<address>" (api.rate_limit.caller_of)
    request_id: str
    total_steps: int
    webhook: str | None = None
    idempotency_key: str | None = None

    @property
    def nbytes(self) -> int:
        return sum(len(data) for data in self.files.values())

    def fingerprint(self) -> str:
        """Same route, request and files: the same job (Idempotency-Key)."""
        digest = hashlib.sha256(self.route.encode())
        digest.update(json.dumps(self.request, sort_keys=True).encode())
        for name in sorted(self.files):
            digest.update(name.encode() + b"\0" + hashlib.sha256(self.files[name]).digest())
        return digest.hexdigest()


@dataclass
class JobRecord:
    """A job's state, as either store keeps it (the result document is kept apart)."""

    id: str
    route: str
    owner: str
    request_id: str
    total_steps: int
    state: JobState = "queued"
    step: int = 0
    eta_s: float | None = None
    error: dict[str, Any] | None = None  # {"status", "code", "message"} of a failed job
    webhook: str | None = None
    nbytes: int = 0
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> JobRecord:
        return cls(**json.loads(raw))

    def status(self) -> JobStatus:
        done = self.state == "done"
        step = self.total_steps if done else self.step
        error = self.error
        return JobStatus(
            job_id=self.id,
            route=self.route,
            state=self.state,
            progress=1.0 if done else round(min(step / max(self.total_steps, 1), 1.0), 4),
            step=step,
            total_steps=self.total_steps,
            eta_s=0.0 if done else (self.eta_s if self.state == "running" else None),
            error=ErrorDetail(code=error["code"], message=error["message"]) if error else None,
            created_at=iso(self.created_at),
            updated_at=iso(self.updated_at),
        )

    def apply_progress(self, report: dict[str, Any] | None) -> None:
        if not report:
            return
        if self.state == "running" and int(report["step"]) != self.step:
            self.updated_at = time.time()
        self.step, self.eta_s = int(report["step"]), report.get("eta_s")
        self.total_steps = int(report.get("total_steps") or self.total_steps)

    def failure(self) -> InpaintError:
        """The stored error as the exception the result route answers with."""
        assert self.error is not None
        error = InpaintError(self.error["message"])
        error.status = HTTPStatus(int(self.error["status"]))
        error.code = self.error["code"]
        return error


def error_document(error: InpaintError) -> dict[str, Any]:
    return {"status": int(error.status), "code": error.code, "message": error.message}


def not_found(job_id: str, ttl_s: float) -> JobNotFoundException:
    return JobNotFoundException(
        f"no job {job_id!r}: it never existed, belongs to another key, or finished more than "
        f"{ttl_s:g} s ago"
    )


def not_done(record: JobRecord) -> JobNotDoneException:
    return JobNotDoneException(
        f"job {record.id} is {record.state}; poll {JOBS_PREFIX}/{record.id} until it is done"
    )


def cancelled(job_id: str) -> JobCancelledException:
    return JobCancelledException(f"job {job_id} was cancelled; it has no result")

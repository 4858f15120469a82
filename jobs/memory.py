"""The single-process job table (no REDIS_URL): jobs live in this entry process.

Bounded: at most JOB_MAX_COUNT jobs are kept (finished ones are dropped first), at most
JOB_MAX_PER_KEY outstanding per owner, JOB_MAX_QUEUED_MB of upload bytes queued, and
JOB_MAX_RUNNING run at once. Finished jobs expire after JOB_TTL_S.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jobs.limits import JobLimits
from jobs.model import (
    FINISHED,
    Canceller,
    Execute,
    IdempotencyConflictException,
    JobRecord,
    ProgressSource,
    Submission,
    cancelled,
    not_done,
    not_found,
)
from jobs.store import run_one
from utils.exceptions import OverloadedException

logger = logging.getLogger("inpaint.jobs")
Finished = Callable[[JobRecord, dict[str, Any] | None], None]


@dataclass
class _Entry:
    record: JobRecord
    submission: Submission
    fingerprint: str
    result: dict[str, Any] | None = None
    task: asyncio.Task | None = None


class InProcessJobs:
    def __init__(
        self,
        limits: JobLimits,
        progress: ProgressSource,
        cancel: Canceller,
        on_finish: Finished | None = None,
    ) -> None:
        self.limits = limits
        self._progress = progress
        self._cancel = cancel
        self._on_finish = on_finish
        self._slots = asyncio.Semaphore(limits.max_running)
        self._jobs: OrderedDict[str, _Entry] = OrderedDict()
        self._idempotent: dict[tuple[str, str], str] = {}
        self._execute: Execute | None = None

    def __len__(self) -> int:
        return len(self._jobs)

    async def start(self, execute: Execute) -> None:
        self._execute = execute

    async def close(self) -> None:
        for entry in self._jobs.values():
            if entry.task is not None:
                entry.task.cancel()

    def health(self) -> dict[str, Any]:
        return {"store": "memory", "available": True}

    async def submit(self, submission: Submission) -> JobRecord:
        self._expire()
        fingerprint = submission.fingerprint()
        if submission.idempotency_key:
            known = self._idempotent.get((submission.owner, submission.idempotency_key))
            if known in self._jobs:
                if self._jobs[known].fingerprint != fingerprint:
                    raise IdempotencyConflictException(
                        "this Idempotency-Key was used with another request"
                    )
                return self._jobs[known].record
        self._admit(submission)
        record = JobRecord(
            id=secrets.token_urlsafe(12),
            route=submission.route,
            owner=submission.owner,
            request_id=submission.request_id,
            total_steps=submission.total_steps,
            webhook=submission.webhook,
            nbytes=submission.nbytes,
        )
        entry = _Entry(record, submission, fingerprint)
        self._jobs[record.id] = entry
        if submission.idempotency_key:
            self._idempotent[(submission.owner, submission.idempotency_key)] = record.id
        entry.task = asyncio.create_task(self._run(entry), name=f"job-{record.id}")
        logger.info("job %s (%s, request %s) queued", record.id, record.route, record.request_id)
        return record

    async def get(self, job_id: str, owner: str) -> JobRecord:
        record = self._entry(job_id, owner).record
        if record.state in ("running", "cancelled"):  # a cancelled job shows where it stopped
            try:
                async with asyncio.timeout(5):
                    record.apply_progress(await self._progress(job_id))
            except Exception as exc:  # progress is best effort; the job is unaffected
                logger.warning("progress of job %s unavailable: %r", job_id, exc)
        return record

    async def result(self, job_id: str, owner: str) -> tuple[dict[str, Any], str]:
        entry = self._entry(job_id, owner)
        record = entry.record
        if record.state == "cancelled":
            raise cancelled(job_id)
        if record.state == "failed":
            raise record.failure()
        if entry.result is None:
            raise not_done(record)
        return entry.result, record.request_id

    async def cancel(self, job_id: str, owner: str) -> JobRecord:
        entry = self._entry(job_id, owner)
        record = entry.record
        if record.state in FINISHED:
            return record
        self._finish(entry, "cancelled", None)
        if entry.task is not None:
            entry.task.cancel()
        try:
            async with asyncio.timeout(5):
                await self._cancel(job_id)
        except Exception as exc:
            logger.warning("could not tell the SD runner to stop job %s: %r", job_id, exc)
        logger.info("job %s cancelled at step %d of %d", job_id, record.step, record.total_steps)
        return record

    async def _run(self, entry: _Entry) -> None:
        assert self._execute is not None, "start() the store before submitting"
        record, submission = entry.record, entry.submission
        try:
            async with self._slots:
                if record.state in FINISHED:
                    return
                record.state, record.updated_at = "running", time.time()
                result, error = await run_one(
                    self._execute, record, submission.request, submission.files
                )
        except asyncio.CancelledError:
            return  # cancel() recorded it
        if record.state in FINISHED:
            return
        record.error = error
        self._finish(entry, "failed" if error else "done", result)

    def _finish(self, entry: _Entry, state: str, result: dict[str, Any] | None) -> None:
        entry.record.state, entry.record.updated_at = state, time.time()  # type: ignore[assignment]
        entry.result = result
        # The upload is needed no more: its bytes leave the budget.
        entry.submission = Submission(**{**entry.submission.__dict__, "files": {}})
        logger.info("job %s %s", entry.record.id, state)
        if self._on_finish is not None:
            self._on_finish(entry.record, result)

    def _entry(self, job_id: str, owner: str) -> _Entry:
        self._expire()
        entry = self._jobs.get(job_id)
        if entry is None or entry.record.owner != owner:
            raise not_found(job_id, self.limits.ttl_s)
        return entry

    def _admit(self, submission: Submission) -> None:
        outstanding = [e for e in self._jobs.values() if e.record.state not in FINISHED]
        mine = sum(1 for e in outstanding if e.record.owner == submission.owner)
        held = sum(e.record.nbytes for e in outstanding)
        self.limits.check(mine, len(outstanding), held, submission.nbytes)
        while len(self._jobs) >= self.limits.max_jobs:
            finished = next((e for e in self._jobs.values() if e.record.state in FINISHED), None)
            if finished is None:
                raise OverloadedException(
                    f"{self.limits.max_jobs} jobs are queued or running; retry when one has "
                    "finished"
                )
            del self._jobs[finished.record.id]

    def _expire(self) -> None:
        deadline = time.time() - self.limits.ttl_s
        for job_id in [
            e.record.id
            for e in self._jobs.values()
            if e.record.state in FINISHED and e.record.updated_at < deadline
        ]:
            del self._jobs[job_id]
        self._idempotent = {k: v for k, v in self._idempotent.items() if v in self._jobs}

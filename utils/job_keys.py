"""The Redis keys of jobs, shared by the entry (jobs.redis_store) and the SD runners
(runners.sd_progress), which must agree on them without importing each other."""

from __future__ import annotations

PREFIX = "inpaint:jobs:"


def progress_key(job_id: str) -> str:
    """Step k of n of a job, written by the SD runner that paints it."""
    return f"{PREFIX}progress:{job_id}"


def cancel_key(job_id: str) -> str:
    """Set when a job is cancelled; read by every SD runner at each step."""
    return f"{PREFIX}cancel:{job_id}"

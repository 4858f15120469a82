"""The bounds every job store enforces at submit time (settings JOB_*)."""

from __future__ import annotations

from dataclasses import dataclass

from config.settings import Settings
from jobs.model import TooManyJobsException
from utils.exceptions import OverloadedException


@dataclass(frozen=True)
class JobLimits:
    max_jobs: int  # outstanding (queued or running) jobs, server-wide: over it, 503
    max_per_owner: int  # outstanding jobs per key or client address: over it, 429
    max_bytes: int  # upload bytes held by outstanding jobs: over it, 503
    max_running: int  # jobs running at once in each replica
    ttl_s: float  # a finished job (and its result) is forgotten after this

    @classmethod
    def from_settings(cls, settings: Settings) -> JobLimits:
        return cls(
            max_jobs=settings.job_max_count,
            max_per_owner=settings.job_max_per_key,
            max_bytes=settings.job_max_queued_mb * 1024 * 1024,
            max_running=settings.job_max_running,
            ttl_s=settings.job_ttl_s,
        )

    def check(self, mine: int, outstanding: int, held_bytes: int, nbytes: int) -> None:
        """Raise the refusal for a new job of `nbytes`, if any."""
        if mine >= self.max_per_owner:
            raise TooManyJobsException(
                f"you have {mine} jobs queued or running (at most {self.max_per_owner}); "
                "retry when one has finished"
            )
        if outstanding >= self.max_jobs:
            raise OverloadedException(
                f"{outstanding} jobs are queued or running; retry when one has finished"
            )
        if held_bytes + nbytes > self.max_bytes:
            raise OverloadedException(
                f"queued jobs hold {held_bytes} upload bytes (at most {self.max_bytes}); "
                "retry when one has finished"
            )

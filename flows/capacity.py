"""What this server can usefully take at once, published in `/api/v1/ready` as `capacity`.

Clients that drive many photos (scripts/batch.py) size their concurrency from it instead of
guessing: synchronous requests beyond MAX_CONCURRENT_REQUESTS only wait for an admission slot,
and jobs beyond JOB_MAX_RUNNING only wait in the job table (which refuses more than
JOB_MAX_COUNT with 503).
"""

from __future__ import annotations

from api.schemas import Capacity, RateLimitCapacity
from config.settings import Settings


def server_capacity(settings: Settings) -> Capacity:
    """The limits a client should pace itself by, and the concurrency they suggest."""
    # One queued job per running one: a job finishing finds the next one ready to start,
    # without the table filling up with work another client may need room for.
    jobs = min(settings.job_max_count, 2 * settings.job_max_running)
    rate_limit = None
    if settings.rate_limit_capacity:
        rate_limit = RateLimitCapacity(
            capacity=settings.rate_limit_capacity,
            refill_per_s=settings.rate_limit_refill_per_s,
            costs=dict(settings.rate_limit_costs),
        )
    return Capacity(
        max_concurrent_requests=settings.max_concurrent_requests,
        admission_wait_s=settings.slot_wait_s,
        job_max_running=settings.job_max_running,
        job_max_count=settings.job_max_count,
        retry_after_s=settings.retry_after_s,
        rate_limit=rate_limit,
        concurrency={"requests": settings.max_concurrent_requests, "jobs": jobs},
    )

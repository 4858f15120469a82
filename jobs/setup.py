"""One replica's jobs: the store REDIS_URL asks for, its limits, and webhook delivery."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from config.settings import Settings
from jobs.http import JobsApi
from jobs.limits import JobLimits
from jobs.memory import InProcessJobs
from jobs.model import Canceller, JobRecord, ProgressSource
from jobs.webhooks import deliver
from utils.breaker import Breaker
from utils.metrics import record_breaker

logger = logging.getLogger("inpaint.jobs")


class WebhookNotifier:
    """Calls a finished job's webhook once, in the background, from the replica that
    recorded the job's end."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pending: set[asyncio.Task[bool]] = set()

    def __call__(self, record: JobRecord, result: dict[str, Any] | None) -> None:
        if not record.webhook:
            return
        settings = self.settings
        task = asyncio.get_running_loop().create_task(
            deliver(
                record.webhook,
                f"job_{record.id}",
                record.status().model_dump(),
                settings.webhook_secret,
                settings.webhook_timeout_s,
                settings.webhook_max_attempts,
            )
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)


def make_jobs(settings: Settings, progress: ProgressSource, cancel: Canceller) -> JobsApi:
    """`progress` and `cancel` reach this replica's SD runner (with Redis, SD runners also
    read and write the job's keys in Redis, whichever replica paints it)."""
    limits = JobLimits.from_settings(settings)
    notify = WebhookNotifier(settings)
    if not settings.redis_url:
        return JobsApi(InProcessJobs(limits, progress, cancel, on_finish=notify), settings)
    from jobs.redis_store import RedisJobs

    breaker = Breaker(
        "redis (jobs)",
        settings.redis_budget_ms / 1000,
        settings.redis_breaker_failures,
        settings.redis_breaker_open_s,
        on_change=record_breaker,
    )
    store = RedisJobs(
        settings.redis_url,
        limits,
        breaker,
        progress,
        cancel,
        reclaim_s=settings.job_reclaim_s,
        max_tries=settings.job_max_tries,
        on_finish=notify,
    )
    return JobsApi(store, settings)

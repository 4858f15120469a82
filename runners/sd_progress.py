"""Per-job progress and cancel flags inside the SD runner.

With REDIS_URL (`RedisMirror`), progress is also written to Redis and cancels are also read
from there, keyed by job id: whichever SD replica paints a job, any entry replica reads its
progress and cancels it.

The pipeline's per-step callback (diffusers `callback_on_step_end`) records step k of n for
the jobs of the running call and stops the call (`pipeline._interrupt`) when every one of
them was cancelled. The entry reads the board through the runner's async APIs, which BentoML
answers on the event loop while the sync inference API holds its worker thread.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from utils.breaker import Breaker, BreakerOpen
from utils.job_keys import cancel_key, progress_key

logger = logging.getLogger("inpaint.runners")
# Jobs are few and short-lived; this only bounds a runner that is never asked again.
BOARD_CAPACITY = 1024


@dataclass
class Progress:
    step: int
    total: int
    started: float  # when step `first_step` ended: the pace is measured from there
    updated: float
    first_step: int = 0

    def report(self) -> dict[str, Any]:
        eta = None
        if self.step > self.first_step:
            per_step = (self.updated - self.started) / (self.step - self.first_step)
            eta = round(per_step * max(self.total - self.step, 0), 3)
        return {"step": self.step, "total_steps": self.total, "eta_s": eta}


class RedisMirror:
    """The board's Redis side. Called from the inference thread (sync client); a slow or
    absent Redis costs each step at most one socket timeout, and nothing while the breaker
    is open."""

    def __init__(self, url: str, ttl_s: int, breaker: Breaker) -> None:
        import redis

        timeout = breaker.budget_s
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self.ttl_s = ttl_s
        self.breaker = breaker

    def publish(self, reports: dict[str, dict[str, Any]]) -> None:
        def write() -> None:
            with self._redis.pipeline(transaction=False) as pipe:
                for job_id, report in reports.items():
                    pipe.set(progress_key(job_id), json.dumps(report), ex=self.ttl_s)
                pipe.execute()

        try:
            self.breaker.call_sync(write)
        except BreakerOpen as exc:
            logger.debug("job progress not shared: %s", exc)

    def cancelled(self, job_ids: Sequence[str]) -> set[str]:
        try:
            flags = self.breaker.call_sync(
                lambda: self._redis.mget([cancel_key(job_id) for job_id in job_ids])
            )
        except BreakerOpen as exc:
            logger.debug("shared cancels unreadable: %s", exc)
            return set()
        return {job_id for job_id, flag in zip(job_ids, flags, strict=True) if flag}


class ProgressBoard:
    """Thread-safe: the callback runs in the inference thread, reads on the event loop."""

    def __init__(self, capacity: int = BOARD_CAPACITY, mirror: RedisMirror | None = None) -> None:
        self.capacity = capacity
        self.mirror = mirror
        self._lock = threading.Lock()
        self._progress: OrderedDict[str, Progress] = OrderedDict()
        self._cancelled: OrderedDict[str, None] = OrderedDict()

    def _remember(self, table: OrderedDict, key: str, value: Any) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > self.capacity:
            table.popitem(last=False)

    def cancel(self, job_id: str) -> None:
        with self._lock:
            self._remember(self._cancelled, job_id, None)

    def all_cancelled(self, job_ids: Sequence[str]) -> bool:
        if not job_ids:
            return False
        with self._lock:
            missing = [job_id for job_id in job_ids if job_id not in self._cancelled]
        if missing and self.mirror is not None:
            for job_id in self.mirror.cancelled(missing):
                self.cancel(job_id)
                missing.remove(job_id)
        return not missing

    def advance(self, job_ids: Sequence[str], step: int, total: int) -> None:
        now = time.monotonic()
        with self._lock:
            for job_id in job_ids:
                progress = self._progress.get(job_id)
                if progress is None:
                    progress = Progress(step, total, now, now, first_step=step)
                progress.step, progress.total, progress.updated = step, total, now
                self._remember(self._progress, job_id, progress)
            reports = {job_id: self._progress[job_id].report() for job_id in job_ids}
        if self.mirror is not None:
            self.mirror.publish(reports)

    def report(self, job_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {
                job_id: {
                    **self._progress[job_id].report(),
                    "cancelled": job_id in self._cancelled,
                }
                for job_id in job_ids
                if job_id in self._progress
            }

    def callback(self, job_ids: Sequence[str], total: int) -> Callable[..., dict[str, Any]]:
        """A `callback_on_step_end` for one pipeline call running `job_ids`."""
        ids = list(job_ids)
        self.advance(ids, 0, total)

        def on_step_end(
            pipeline: Any, index: int, timestep: Any, kwargs: dict[str, Any]
        ) -> dict[str, Any]:
            self.advance(ids, index + 1, int(getattr(pipeline, "num_timesteps", total)))
            if self.all_cancelled(ids) and not pipeline._interrupt:
                pipeline._interrupt = True  # diffusers skips the remaining steps
                logger.info(
                    "SD jobs %s stopped at step %d of %d: cancelled by their callers",
                    ", ".join(ids),
                    index + 1,
                    total,
                )
            return kwargs

        return on_step_end


def make_board(redis_url: str, ttl_s: int, breaker: Breaker) -> ProgressBoard:
    """The SD runner's board; shared through Redis when REDIS_URL is set."""
    return ProgressBoard(mirror=RedisMirror(redis_url, ttl_s, breaker) if redis_url else None)

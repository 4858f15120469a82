"""Per-job progress and cancel flags inside the SD runner.

The pipeline's per-step callback (diffusers `callback_on_step_end`) records step k of n for
the jobs of the running call and stops the call (`pipeline._interrupt`) when every one of
them was cancelled. The entry reads the board through the runner's async APIs, which BentoML
answers on the event loop while the sync inference API holds its worker thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

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


class ProgressBoard:
    """Thread-safe: the callback runs in the inference thread, reads on the event loop."""

    def __init__(self, capacity: int = BOARD_CAPACITY) -> None:
        self.capacity = capacity
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
        with self._lock:
            return bool(job_ids) and all(job_id in self._cancelled for job_id in job_ids)

    def advance(self, job_ids: Sequence[str], step: int, total: int) -> None:
        now = time.monotonic()
        with self._lock:
            for job_id in job_ids:
                progress = self._progress.get(job_id)
                if progress is None:
                    progress = Progress(step, total, now, now, first_step=step)
                progress.step, progress.total, progress.updated = step, total, now
                self._remember(self._progress, job_id, progress)

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

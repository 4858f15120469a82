"""The entry's job table (api.jobs) and the SD runner's progress board (runners.sd_progress).

The job's work here is a plain coroutine that waits on events: the table's bookkeeping
(states, limits, expiry, errors, cancel) is what is under test, not a model.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from api.jobs import (
    JobCancelledException,
    JobNotDoneException,
    JobNotFoundException,
    JobStore,
    current_job_id,
)
from api.schemas import ErrorDetail, ErrorResponse
from runners import sd_progress
from runners.sd_progress import ProgressBoard
from utils.exceptions import EmptyMaskException, OverloadedException


class Runner:
    """Stands in for the SD runner's progress/cancel APIs: records what the store asks."""

    def __init__(self) -> None:
        self.reports: dict[str, dict[str, Any]] = {}
        self.cancelled: list[str] = []

    async def progress(self, job_id: str) -> dict[str, Any] | None:
        return self.reports.get(job_id)

    async def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)


def _store(runner: Runner, **limits: Any) -> JobStore:
    options = {"max_jobs": 8, "ttl_s": 60.0, "max_running": 1, **limits}
    return JobStore(progress=runner.progress, cancel=runner.cancel, **options)


def _body(text: str) -> ErrorResponse:
    """Any pydantic body stands for the route's response."""
    return ErrorResponse(request_id="r", timestamp="t", error=ErrorDetail(code="x", message=text))


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_job_runs_reports_progress_and_keeps_its_result() -> None:
    async def scenario() -> None:
        runner = Runner()
        store = _store(runner)
        release = asyncio.Event()
        seen_ids: list[str | None] = []

        async def work():
            seen_ids.append(current_job_id.get())
            await release.wait()
            return _body("done")

        job = store.submit("fill", "req-1", 30, work)
        assert job.status().state == "queued"
        with pytest.raises(JobNotDoneException):
            job.result()
        await _settle()
        assert job.state == "running" and seen_ids == [job.id]
        runner.reports[job.id] = {"step": 12, "total_steps": 30, "eta_s": 3.5}
        status = (await store.refresh(job)).status()
        assert (status.step, status.total_steps, status.eta_s) == (12, 30, 3.5)
        assert status.progress == pytest.approx(0.4)
        release.set()
        await _settle()
        status = store.get(job.id).status()
        assert status.state == "done" and status.progress == 1.0 and status.step == 30
        assert job.result().error.message == "done"  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_a_failed_job_gives_its_error() -> None:
    async def scenario() -> None:
        store = _store(Runner())

        async def work():
            return EmptyMaskException("SAM's mask is empty")

        job = store.submit("replace", "req-2", 10, work)
        await _settle()
        status = job.status()
        assert status.state == "failed" and status.error.code == "empty_mask"
        with pytest.raises(EmptyMaskException):
            job.result()

    asyncio.run(scenario())


def test_cancel_stops_running_and_queued_jobs() -> None:
    async def scenario() -> None:
        runner = Runner()
        store = _store(runner, max_running=1)
        started: list[str] = []

        async def work():
            started.append(current_job_id.get() or "")
            await asyncio.Event().wait()  # never finishes on its own

        first = store.submit("fill", "a", 50, work)
        second = store.submit("fill", "b", 50, work)
        await _settle()
        assert (first.state, second.state) == ("running", "queued")
        await store.cancel(second)
        await store.cancel(first)
        await _settle()
        assert started == [first.id], "the cancelled queued job never started"
        assert runner.cancelled == [second.id, first.id]
        for job in (first, second):
            assert job.status().state == "cancelled"
            with pytest.raises(JobCancelledException):
                job.result()
        # Cancelling again, or a finished job, changes nothing.
        assert (await store.cancel(first)).state == "cancelled"

    asyncio.run(scenario())


def test_the_table_is_bounded_and_finished_jobs_expire() -> None:
    async def scenario() -> None:
        store = _store(Runner(), max_jobs=2, ttl_s=60.0)
        blocker = asyncio.Event()

        async def slow():
            await blocker.wait()
            return _body("ok")

        async def quick():
            return _body("ok")

        done = store.submit("fill", "a", 1, quick)
        await _settle()
        busy = store.submit("fill", "b", 1, slow)
        # Full: the finished job makes room, the running one is kept.
        third = store.submit("fill", "c", 1, slow)
        with pytest.raises(JobNotFoundException):
            store.get(done.id)
        with pytest.raises(OverloadedException):
            store.submit("fill", "d", 1, slow)
        blocker.set()
        await _settle()
        for job in (busy, third):
            job.updated_at = time.time() - 61
        with pytest.raises(JobNotFoundException):
            store.get(busy.id)
        assert len(store) == 0

    asyncio.run(scenario())


def test_board_eta_is_the_remaining_steps_at_the_pace_so_far(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = iter([100.0, 104.0])
    monkeypatch.setattr(sd_progress.time, "monotonic", lambda: next(clock))
    board = ProgressBoard()
    board.advance(["a"], 1, 20)  # the first step's end starts the clock
    board.advance(["a"], 5, 20)  # 4 more steps in 4 s: 1 s a step, 15 to go
    assert board.report(["a"])["a"]["eta_s"] == 15.0


def test_board_reports_steps_and_stops_a_cancelled_pipeline() -> None:
    board = ProgressBoard()
    pipeline = SimpleNamespace(num_timesteps=20, _interrupt=False)
    callback = board.callback(["a", "b"], 20)
    assert board.report(["a"])["a"] == {
        "step": 0,
        "total_steps": 20,
        "eta_s": None,
        "cancelled": False,
    }
    callback(pipeline, 4, 0, {"latents": 1})
    report = board.report(["a", "b", "unknown"])
    assert set(report) == {"a", "b"} and report["a"]["step"] == 5
    board.cancel("a")
    callback(pipeline, 5, 0, {})
    assert pipeline._interrupt is False, "b still wants its picture"
    board.cancel("b")
    assert callback(pipeline, 6, 0, {"x": 2}) == {"x": 2}
    assert pipeline._interrupt is True
    assert board.all_cancelled(["a", "b"]) and not board.all_cancelled([])


def test_board_forgets_the_oldest_entries() -> None:
    board = ProgressBoard(capacity=2)
    for job_id in ("a", "b", "c"):
        board.cancel(job_id)
        board.advance([job_id], 1, 2)
    assert set(board.report(["a", "b", "c"])) == {"b", "c"}
    assert not board.all_cancelled(["a"])

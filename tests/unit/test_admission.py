"""Admission slots: who waits, for how long, and what a request gets when it cannot start."""

from __future__ import annotations

import asyncio
import time

import pytest

from config.settings import Settings
from flows.admission import Admission
from utils.exceptions import InpaintError, OverloadedException, ProcessingTimeoutException


async def _no_runner_failure(exc: Exception) -> InpaintError:
    raise AssertionError(f"no runner is called here: {exc!r}")


def _admission(**limits: float) -> Admission:
    return Admission(Settings(_env_file=None, **limits), _no_runner_failure)


async def _held_until(release: asyncio.Event) -> str:
    await release.wait()
    return "held"


def test_a_request_that_gets_no_slot_within_the_admission_wait_is_overloaded() -> None:
    """The one slot stays taken: the waiter gives up after ADMISSION_WAIT_S, long before its
    deadline, and the holder still finishes."""
    admission = _admission(max_concurrent_requests=1, admission_wait_s=0.3, processing_timeout_s=30)

    async def run() -> tuple[object, float, object]:
        release = asyncio.Event()
        holder = asyncio.ensure_future(
            admission.attempt("segment", "a", lambda: _held_until(release), admit=True)
        )
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        waiter = await admission.attempt("segment", "b", lambda: _held_until(release), admit=True)
        waited = time.perf_counter() - started
        release.set()
        return waiter, waited, await holder

    waiter, waited, holder = asyncio.run(run())
    assert isinstance(waiter, OverloadedException), waiter
    assert waiter.code == "overloaded" and "0.3 s" in str(waiter)
    assert 0.25 <= waited < 5
    assert holder == "held"


def test_a_waiter_gets_the_slot_its_holder_frees_and_slots_are_never_lost() -> None:
    """A slot freed by work that finished, timed out or failed goes to the next request."""
    admission = _admission(max_concurrent_requests=1, admission_wait_s=5, processing_timeout_s=0.5)

    async def quick() -> str:
        await asyncio.sleep(0.1)
        return "done"

    async def never() -> str:
        await asyncio.Event().wait()
        return "unreachable"

    async def broken() -> str:
        raise OverloadedException("a runner sheds load")

    async def run() -> list[object]:
        first = asyncio.ensure_future(admission.attempt("remove", "a", quick, admit=True))
        await asyncio.sleep(0.01)
        second = await admission.attempt("remove", "b", quick, admit=True)
        timed_out = await admission.attempt("remove", "c", never, admit=True)
        failed = await admission.attempt("remove", "d", broken, admit=True)
        last = await asyncio.wait_for(admission.attempt("remove", "e", quick, admit=True), 1)
        return [await first, second, timed_out, failed, last]

    first, second, timed_out, failed, last = asyncio.run(run())
    assert (first, second, last) == ("done", "done", "done")
    assert isinstance(timed_out, ProcessingTimeoutException) and "0.5 s" in str(timed_out)
    assert isinstance(failed, OverloadedException)


def test_work_that_needs_no_slot_runs_beside_a_full_server() -> None:
    """Jobs run without an admission slot (they have their own): a full entry does not stall
    them."""
    admission = _admission(max_concurrent_requests=1, admission_wait_s=0.2, processing_timeout_s=5)

    async def job() -> str:
        return "job"

    async def run() -> object:
        release = asyncio.Event()
        holder = asyncio.ensure_future(
            admission.attempt("segment", "a", lambda: _held_until(release), admit=True)
        )
        await asyncio.sleep(0.05)
        outcome = await admission.attempt("jobs/remove", "j", job, admit=False)
        release.set()
        await holder
        return outcome

    assert asyncio.run(run()) == "job"


@pytest.mark.parametrize(
    ("admission_wait_s", "processing_timeout_s", "expected"), [(30, 600, 30), (30, 2, 2)]
)
def test_the_slot_wait_never_outlasts_the_deadline(
    admission_wait_s: float, processing_timeout_s: float, expected: float
) -> None:
    settings = Settings(
        _env_file=None,
        admission_wait_s=admission_wait_s,
        processing_timeout_s=processing_timeout_s,
    )
    assert settings.slot_wait_s == expected

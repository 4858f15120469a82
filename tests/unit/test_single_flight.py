"""Concurrent requests for one key share one computation; nobody left means nothing runs."""

from __future__ import annotations

import asyncio

import pytest

from runners.embedding_cache import SingleFlight

pytestmark = pytest.mark.anyio


async def test_concurrent_callers_share_one_run_per_key() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    runs: list[str] = []
    release = asyncio.Event()

    def compute(key: str):  # noqa: ANN202 - a coroutine factory
        async def run() -> str:
            runs.append(key)
            await release.wait()
            return key.upper()

        return run

    callers = [flights.run(key, compute(key)) for key in ["a", "b"] * 50]
    gathered = asyncio.gather(*callers)
    await asyncio.sleep(0)
    release.set()
    results = await gathered
    assert sorted(runs) == ["a", "b"]
    assert [value for value, _ in results] == ["A", "B"] * 50
    assert sum(not joined for _, joined in results) == 2
    assert len(flights) == 0


async def test_a_caller_who_leaves_does_not_cancel_the_others() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    release = asyncio.Event()

    async def compute() -> int:
        await release.wait()
        return 7

    leaver = asyncio.ensure_future(flights.run("k", compute))
    stayer = asyncio.ensure_future(flights.run("k", compute))
    await asyncio.sleep(0)
    leaver.cancel()
    await asyncio.sleep(0)
    release.set()
    assert await stayer == (7, True)


async def test_the_run_is_cancelled_when_every_caller_has_left() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    cancelled = asyncio.Event()

    async def compute() -> int:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 1

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await flights.run("k", compute)
    await asyncio.wait_for(cancelled.wait(), 5)
    assert len(flights) == 0


async def test_a_failure_reaches_every_caller_and_is_not_kept() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    calls = 0

    async def compute() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        raise RuntimeError("encoder failed")

    results = await asyncio.gather(
        *(flights.run("k", compute) for _ in range(3)), return_exceptions=True
    )
    assert calls == 1 and all(isinstance(r, RuntimeError) for r in results)
    assert len(flights) == 0

"""Runner calls survive a dropped pooled connection, and only that."""

from __future__ import annotations

import aiohttp
import pytest

from runners.client import call_runner

pytestmark = pytest.mark.anyio


class Flaky:
    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self, value: int, *, scale: int = 1) -> int:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return value * scale


async def test_a_dropped_connection_is_retried_with_the_same_arguments() -> None:
    method = Flaky([aiohttp.ServerDisconnectedError(), aiohttp.ClientOSError()])
    assert await call_runner(method, 3, scale=2) == 6
    assert method.calls == 3


async def test_retries_stop_after_three_attempts() -> None:
    method = Flaky([aiohttp.ServerDisconnectedError() for _ in range(5)])
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await call_runner(method, 1)
    assert method.calls == 3


async def test_other_errors_are_not_retried() -> None:
    method = Flaky([ValueError("bad input")])
    with pytest.raises(ValueError, match="bad input"):
        await call_runner(method, 1)
    assert method.calls == 1

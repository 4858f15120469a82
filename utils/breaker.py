"""A circuit breaker for calls to a shared store (Redis): each call within a time budget, and
after a few failures in a row, no calls at all for a while.

A frozen store then costs a request at most one budget, and only while the breaker is
deciding; once open, callers get `BreakerOpen` at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

logger = logging.getLogger("inpaint.breaker")
T = TypeVar("T")


class BreakerOpen(Exception):
    """The store failed recently; the call was not made (or did not finish in its budget)."""


class Breaker:
    def __init__(
        self,
        name: str,
        budget_s: float,
        failures: int,
        open_s: float,
        on_change: Callable[[str, bool], None] | None = None,
    ) -> None:
        """`on_change(name, open)` is told when the breaker opens, and when a call succeeds
        again after it had opened (for the metrics)."""
        self.name = name
        self.on_change = on_change
        self._tripped = False
        self.budget_s = budget_s
        self.failures = failures
        self.open_s = open_s
        self._failed = 0
        self._open_until = 0.0
        self.trips = 0  # times it opened, for the metrics

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self._open_until

    async def call(self, work: Awaitable[T], budget_s: float | None = None) -> T:
        """`await work` within the budget; any failure counts, and raises BreakerOpen."""
        if self.is_open:
            close = getattr(work, "close", None)
            if close is not None:
                close()  # a coroutine never awaited would warn
            raise BreakerOpen(f"{self.name} unavailable (breaker open)")
        try:
            async with asyncio.timeout(budget_s or self.budget_s):
                result = await work
        except Exception as exc:
            self._failure(exc)
            raise BreakerOpen(f"{self.name} unavailable: {exc!r}") from exc
        self._succeeded()
        return result

    def call_sync(self, work: Callable[[], T]) -> T:
        """`work()` unless open; its own timeout (e.g. a socket timeout) is the budget."""
        if self.is_open:
            raise BreakerOpen(f"{self.name} unavailable (breaker open)")
        try:
            result = work()
        except Exception as exc:
            self._failure(exc)
            raise BreakerOpen(f"{self.name} unavailable: {exc!r}") from exc
        self._succeeded()
        return result

    def _succeeded(self) -> None:
        self._failed = 0
        if self._tripped:
            self._tripped = False
            logger.info("%s answers again", self.name)
            if self.on_change is not None:
                self.on_change(self.name, False)

    def _failure(self, exc: BaseException) -> None:
        self._failed += 1
        if self._failed >= self.failures and not self.is_open:
            self._open_until = time.monotonic() + self.open_s
            self.trips += 1
            self._tripped = True
            if self.on_change is not None:
                self.on_change(self.name, True)
            logger.warning(
                "%s failed %d times in a row (%r): skipping it for %g s",
                self.name,
                self._failed,
                exc,
                self.open_s,
            )

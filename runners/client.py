"""Calling a runner from the entry service: retry only what provably never reached it.

A call is retried only when no connection could be opened (`ClientConnectorError`: connection
refused, socket missing while a runner restarts), so the runner cannot have received the
request. A connection lost after the request went out (`ServerDisconnectedError`, a reset) is
never retried: the runner may have started the work, and a request that crashes a runner
must not be sent twice more.

What used to make such losses routine is avoided instead: BentoML 1.4's client closed its
whole session every `runner_connection.max_requests` calls or `max_age` seconds while other
calls were in flight (BentoML issues 5540, 4971); runners.runtime sets both out of reach.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import aiohttp
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

P = ParamSpec("P")
R = TypeVar("R")


@retry(
    retry=retry_if_exception_type(aiohttp.ClientConnectorError),
    stop=stop_after_attempt(3),
    wait=wait_exponential(multiplier=0.1, max=1.0),
    reraise=True,
)
async def call_runner(method: Callable[P, Awaitable[R]], *args: P.args, **kwargs: P.kwargs) -> R:
    """`await method(*args, **kwargs)`, again (twice at most) if no connection could be made."""
    return await method(*args, **kwargs)

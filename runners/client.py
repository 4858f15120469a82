"""Calling a runner from the entry service, surviving BentoML's dropped connections.

BentoML 1.4's client to a dependency can lose a pooled connection mid-request: it closes its
whole session every `runner_connection.max_requests` calls or `max_age` seconds while other
requests are still in flight, and a runner's uvicorn drops idle keep-alive connections after
5 s while the client may still reuse them (BentoML issues 5540, 4971). Runner calls are pure
functions of their inputs, so retrying them on a fresh connection is safe.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import aiohttp
from tenacity import retry, retry_if_exception_type, stop_after_attempt

P = ParamSpec("P")
R = TypeVar("R")


@retry(
    retry=retry_if_exception_type(aiohttp.ClientConnectionError),
    stop=stop_after_attempt(3),
    reraise=True,
)
async def call_runner(method: Callable[P, Awaitable[R]], *args: P.args, **kwargs: P.kwargs) -> R:
    """`await method(*args, **kwargs)`, again (twice at most) if the connection dropped."""
    return await method(*args, **kwargs)

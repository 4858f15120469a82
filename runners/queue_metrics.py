"""Queue time and batch size of a model runner, for /metrics.

`RunnerArrivals` (ASGI middleware on the runner service) notes when each call arrives;
`model_work_started(runner, method, n)`, called first thing in a runner API, takes the `n`
oldest waiting calls of that method as the ones it is serving and observes how long each
waited. BentoML serves a method's calls first come, first served (its batch dispatcher and its
thread limiter are both FIFO), which is what makes "the n oldest" the right ones. A call that
ends without reaching the model (shed, invalid) is forgotten when its response is sent.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from contextlib import suppress
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from utils.metrics import metrics


@dataclass(eq=False)  # identity, not value, tells two calls apart
class _Arrival:
    at: float


_waiting: defaultdict[str, deque[_Arrival]] = defaultdict(deque)


class RunnerArrivals:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        queue = _waiting[scope["path"].strip("/")]
        arrival = _Arrival(time.perf_counter())
        queue.append(arrival)
        try:
            await self.app(scope, receive, send)
        finally:
            # The model thread may pop it meanwhile: removing is best effort.
            with suppress(ValueError):
                queue.remove(arrival)


def model_work_started(runner: str, method: str, batch_size: int) -> None:
    """Record a model call of `batch_size` items on `runner.method` starting now."""
    m = metrics()
    m.runner_batch_size.labels(runner=runner, method=method).observe(batch_size)
    queue = _waiting[method]
    now = time.perf_counter()
    for _ in range(min(batch_size, len(queue))):
        m.runner_queue.labels(runner=runner, method=method).observe(now - queue.popleft().at)

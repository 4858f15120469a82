"""What every flow is handed: the runner clients, the runners' facts, and the request's deadline.

The deadline and the request id live in context variables, set once per request by the
admission (flows.admission) and read by every runner call the request makes, so queued work
past the deadline is skipped by the runner and log lines name the request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from config.settings import Settings
from runners.client import call_runner
from utils.decoded_uploads import DecodedUploads
from utils.exceptions import ModelNotLoadedException

if TYPE_CHECKING:
    from flows.sam3_client import Sam3Client
    from flows.sam_client import SamClient

logger = logging.getLogger("inpaint.flows")

_DEADLINE: ContextVar[float | None] = ContextVar("deadline", default=None)
_REQUEST: ContextVar[str] = ContextVar("request_id", default="-")  # for the log only


def begin_request(request_id: str, timeout_s: float) -> None:
    """Start the current request's clock: runner calls made from here on carry its deadline."""
    _DEADLINE.set(time.time() + timeout_s)
    _REQUEST.set(request_id)


def current_request() -> str:
    return _REQUEST.get()


def request_deadline(timeout_s: float) -> float:
    """The current request's deadline (epoch seconds); `timeout_s` from now outside a request."""
    deadline = _DEADLINE.get()
    return time.time() + timeout_s if deadline is None else deadline


@dataclass(frozen=True)
class Runners:
    """The entry's clients of the model runners (bentoml.depends handles)."""

    sam: Any
    lama: Any
    sd: Any
    # Job progress polls and cancels use a client of their own, so frequent polling never
    # shares the connections that long SD calls are waiting on.
    sd_monitor: Any
    sam3: Any = None  # SAM 3: selection by words

    def of(self, kind: str) -> Any:
        return {"sam": self.sam, "lama": self.lama, "sd": self.sd, "sam3": self.sam3}[kind]


class RunnerFacts:
    """A loaded runner's status, fetched once: its model tag, device and details do not change."""

    def __init__(self, runners: Runners) -> None:
        self._runners = runners
        self._reports: dict[str, dict[str, Any]] = {}

    async def report(self, kind: str) -> dict[str, Any]:
        if kind not in self._reports:
            report = await call_runner(self._runners.of(kind).to_async.status)
            if not report["loaded"]:
                raise ModelNotLoadedException(
                    f"the {kind} model {report['tag']} is not loaded: {report['error']}"
                )
            self._reports[kind] = report
        return self._reports[kind]

    async def tags(self, kinds: Sequence[str]) -> dict[str, str]:
        return {kind: (await self.report(kind))["tag"] for kind in kinds}

    async def device(self, kind: str) -> str:
        return str((await self.report(kind))["device"])

    async def sd_resolution(self) -> int:
        return int((await self.report("sd"))["details"]["native_resolution"])


class Background:
    """Fire-and-forget runner calls (cancels), kept referenced until done, failures logged."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Future[Any]] = set()

    def run(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(_log_failure)
        task.add_done_callback(self._tasks.discard)


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("background runner call failed: %r", task.exception())


@dataclass
class FlowContext:
    """Everything a flow may use; built once by the service."""

    settings: Settings
    runners: Runners
    facts: RunnerFacts
    sam: SamClient
    decoded: DecodedUploads
    background: Background = field(default_factory=Background)
    sam3: Sam3Client | None = None

    def deadline(self) -> float:
        return request_deadline(self.settings.processing_timeout_s)

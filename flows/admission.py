"""Admission, deadlines and cancellation: how a request's work is run and how it can fail.

- At most MAX_CONCURRENT_REQUESTS requests hold a decoded image at once; one that gets no slot
  within ADMISSION_WAIT_S (or its deadline, if sooner) is 503 overloaded.
- The work runs within PROCESSING_TIMEOUT_S; past it, 504.
- A request whose client goes away is cancelled, and with it the runner calls it waits on.
- Any failure becomes the error a client gets (utils.exceptions), never a bare 500.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any, TypeVar

import aiohttp
from bentoml.exceptions import BentoMLException
from pydantic import BaseModel
from starlette.requests import Request

from api.errors import error_response
from config.settings import Settings
from utils.exceptions import InpaintError, OverloadedException, ProcessingTimeoutException

logger = logging.getLogger("inpaint.admission")

Result = TypeVar("Result")
Outcome = Any  # a response model, or the InpaintError a client gets instead
RunnerFailure = Callable[[Exception], Awaitable[InpaintError]]

_DISCONNECT_POLL_S = 0.25


class ClientGoneException(InpaintError):
    """The client closed the connection before the answer; nobody reads this one."""

    status = HTTPStatus.REQUEST_TIMEOUT
    code = "client_closed_request"


class Admission:
    def __init__(self, settings: Settings, runner_failure: RunnerFailure) -> None:
        self._settings = settings
        self._runner_failure = runner_failure
        self._slots = asyncio.Semaphore(settings.max_concurrent_requests)

    def reply(self, ctx: Any, request_id: str, outcome: Outcome) -> Any:
        """The response for an outcome: the body, or the error in our shape with its status
        set on the BentoML context (the request's log line is api.observe's)."""
        if not isinstance(outcome, InpaintError):
            return outcome
        ctx.response.status_code = int(outcome.status)
        response = error_response(outcome, request_id)
        if isinstance(outcome, OverloadedException):
            response.headers["Retry-After"] = str(self._settings.retry_after_s)
        return response

    async def attempt(
        self, route: str, request_id: str, work: Callable[[], Awaitable[Result]], admit: bool
    ) -> Result | InpaintError:
        """`work()` within the processing timeout; any failure as the error a client gets.
        With `admit`, the work first waits for an admission slot."""
        timeout_s = self._settings.processing_timeout_s
        wait_s = self._settings.slot_wait_s
        admitted = not admit
        try:
            async with asyncio.timeout(timeout_s):
                if admitted:
                    return await work()
                await asyncio.wait_for(self._slots.acquire(), wait_s)
                admitted = True
                try:
                    return await work()
                finally:
                    self._slots.release()
        except TimeoutError:
            if not admitted:
                return OverloadedException(
                    f"no capacity freed up within {wait_s:g} s; retry shortly"
                )
            return ProcessingTimeoutException(f"processing took longer than {timeout_s:g} s")
        except InpaintError as exc:
            return exc
        except (BentoMLException, aiohttp.ClientConnectionError) as exc:
            return await self._runner_failure(exc)
        except Exception as exc:
            logger.exception("%s %s failed", route, request_id)
            verbose = self._settings.debug and not self._settings.is_production
            detail = f": {exc!r}" if verbose else ""
            return InpaintError(f"an unexpected error occurred; see the server log{detail}")


def stamped(outcome: Outcome, request_id: str, started: float) -> Outcome:
    """A response body with its request id and processing time; errors and ready-made
    responses (binary bodies) pass through."""
    if isinstance(outcome, BaseModel):
        outcome.request_id = request_id
        outcome.metadata.processing_time_ms = round((time.perf_counter() - started) * 1000, 1)
    return outcome


async def unless_disconnected(request: Request, work: Awaitable[Result]) -> Result:
    """`await work`, cancelled (and with it the runner calls it waits on) if the client goes
    away meanwhile: then ClientGoneException."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        try:
            while not await request.is_disconnected():
                await asyncio.sleep(_DISCONNECT_POLL_S)
        except Exception:  # cannot tell: never claim a disconnect
            logger.debug("disconnect detection unavailable", exc_info=True)
            await asyncio.Event().wait()

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        logger.info("client went away; its work is cancelled")
        raise ClientGoneException("the client closed the connection")
    return task.result()

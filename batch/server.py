"""The batch command's side of the HTTP API: capacity, the routes and jobs, backoff.

The concurrency comes from the server: `capacity.concurrency` in `/api/v1/ready`
(flows/capacity.py). Which operations run as jobs comes from its `/openapi.json`: fill and
replace always have `/api/v1/jobs/<op>`; remove goes through `/api/v1/jobs/remove` where the
server has it, else through the synchronous `/api/v1/remove`. A 429 or a 503 `overloaded` is
retried after the response's Retry-After (tenacity); any other refusal is the photo's error.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

API = "/api/v1"
FINISHED = frozenset({"done", "failed", "cancelled"})
# Retried whatever the body says: the rate limit, and capacity the server says will free up.
RETRYABLE_STATUSES = frozenset({429, 503})
NOT_RETRIED_CODES = frozenset({"model_not_loaded"})  # a 503 that waiting does not fix
logger = logging.getLogger("inpaint.batch")


class Refused(Exception):
    """The server's answer for this photo: an HTTP status and our error body's code."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


class Busy(Refused):
    """429 or 503 overloaded: the same request later will do."""


class ServerUnavailable(RuntimeError):
    """The server cannot take a batch at all (unreachable, or not ready)."""


@dataclass(frozen=True)
class ServerInfo:
    concurrency: dict[str, int]  # "requests" (synchronous routes) and "jobs"
    job_operations: frozenset[str]
    capacity: dict[str, Any] | None = None  # as /ready published it; None from older servers
    models: dict[str, str] = field(default_factory=dict)

    def uses_job(self, operation: str) -> bool:
        return operation in self.job_operations

    def slots(self, operation: str) -> str:
        return "jobs" if self.uses_job(operation) else "requests"


def refusal(response: httpx.Response) -> Refused:
    """Our error body as an exception (BentoML's or a proxy's plain bodies too)."""
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = f"http_{response.status_code}", response.text[:300]
    retry_after = _retry_after(response.headers.get("Retry-After"))
    kind = (
        Busy
        if response.status_code in RETRYABLE_STATUSES and code not in NOT_RETRIED_CODES
        else Refused
    )
    return kind(response.status_code, code, message, retry_after)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date: rare from this server; back off exponentially instead
        return None


class _WaitRetryAfter:
    """tenacity wait: the Retry-After the refusal carried, else exponential backoff."""

    def __init__(self, cap_s: float) -> None:
        self._fallback = wait_exponential(multiplier=0.5, max=cap_s)
        self._cap_s = cap_s

    def __call__(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, Busy) and error.retry_after is not None:
            return min(error.retry_after, self._cap_s)
        return self._fallback(state)


async def to_completion(work: Awaitable[Any]) -> Any:
    """Await `work` to its end even if the caller is cancelled meanwhile; then the caller's
    cancellation goes on (CancelledError), the work's result being given up."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return task.result()


class BatchClient:
    """One server, many photos: `process()` returns the route's response body."""

    def __init__(
        self,
        url: str,
        api_key: str | None,
        timeout_s: float,
        retries: int = 10,
        max_wait_s: float = 60.0,
        poll_s: float = 0.25,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            transport=transport,
        )
        self._retries = retries
        self._max_wait_s = max_wait_s
        self._poll_s = poll_s
        self.info: ServerInfo | None = None

    async def __aenter__(self) -> BatchClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._http.aclose()

    async def connect(self) -> ServerInfo:
        """Readiness, capacity and the job routes of the server; raises ServerUnavailable."""
        try:
            ready = await self._http.get(f"{API}/ready")
        except httpx.HTTPError as exc:
            raise ServerUnavailable(f"no answer from {self._http.base_url}: {exc!r}") from exc
        try:
            body = ready.json()
        except ValueError:
            body = {}
        if ready.status_code != 200:
            problems = "; ".join(body.get("problems", [])) or ready.text[:300]
            raise ServerUnavailable(f"the server is not ready ({ready.status_code}): {problems}")
        capacity = body.get("capacity")
        if capacity and capacity.get("concurrency"):
            concurrency = {k: max(1, int(v)) for k, v in capacity["concurrency"].items()}
        else:  # a server from before flows/capacity.py: one at a time is the safe guess
            logger.warning("the server publishes no capacity; sending one photo at a time")
            concurrency = {"requests": 1, "jobs": 1}
        self.info = ServerInfo(
            concurrency={"requests": 1, "jobs": 1, **concurrency},
            job_operations=await self._job_operations(),
            capacity=capacity,
            models={k: v.get("tag", "") for k, v in body.get("models", {}).items()},
        )
        return self.info

    async def _job_operations(self) -> frozenset[str]:
        try:
            response = await self._http.get("/openapi.json")
            paths = response.json()["paths"] if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, KeyError):
            paths = None
        if paths is None:  # docs behind a key we lack: the jobs every version has
            return frozenset({"fill", "replace"})
        return frozenset(op for op in ("remove", "fill", "replace") if f"{API}/jobs/{op}" in paths)

    async def process(
        self, operation: str, image: bytes, request: dict[str, Any], mask: bytes | None = None
    ) -> dict[str, Any]:
        """The response body for one photo, retrying what the server says to retry."""
        assert self.info is not None, "connect() first"
        once: Callable[[], Awaitable[dict[str, Any]]]
        if self.info.uses_job(operation):
            once = lambda: self._job(operation, image, request, mask)  # noqa: E731
        else:
            once = lambda: self._post(operation, image, request, mask)  # noqa: E731
        retrying = AsyncRetrying(
            retry=retry_if_exception_type((Busy, httpx.ConnectError, httpx.RemoteProtocolError)),
            wait=_WaitRetryAfter(self._max_wait_s),
            stop=stop_after_attempt(self._retries + 1),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await once()
        raise AssertionError("unreachable")  # pragma: no cover - reraise=True

    def _files(self, image: bytes, mask: bytes | None) -> dict[str, Any]:
        files: dict[str, Any] = {"image": ("image", image, "application/octet-stream")}
        if mask is not None:
            files["mask"] = ("mask", mask, "application/octet-stream")
        return files

    async def _post(
        self, route: str, image: bytes, request: dict[str, Any], mask: bytes | None
    ) -> dict[str, Any]:
        response = await self._http.post(
            f"{API}/{route}",
            files=self._files(image, mask),
            data={"request": json.dumps(request)},
        )
        if response.status_code != 200:
            raise refusal(response)
        return response.json()

    async def _job(
        self, operation: str, image: bytes, request: dict[str, Any], mask: bytes | None
    ) -> dict[str, Any]:
        """Submit, follow until finished, fetch the result; a cancelled caller cancels the
        job on the server too."""
        response = await self._http.post(
            f"{API}/jobs/{operation}",
            files=self._files(image, mask),
            data={"request": json.dumps(request)},
        )
        if response.status_code != 202:
            raise refusal(response)
        accepted = response.json()
        try:
            await self._follow(accepted["status_url"])
        except asyncio.CancelledError:
            await to_completion(self._cancel(accepted["status_url"]))
            raise
        result = await self._http.get(accepted["result_url"])
        if result.status_code != 200:
            raise refusal(result)
        return result.json()

    async def _follow(self, status_url: str) -> None:
        while True:
            response = await self._http.get(status_url)
            if response.status_code != 200:
                raise refusal(response)
            status = response.json()
            if status["state"] in FINISHED:
                return
            # Poll often near the end, less while many steps are left.
            eta = status.get("eta_s") or 0.0
            await asyncio.sleep(min(max(self._poll_s, eta / 4), 2.0))

    async def _cancel(self, status_url: str) -> None:
        try:
            async with asyncio.timeout(5):
                await self._http.delete(status_url)
        except (httpx.HTTPError, TimeoutError) as exc:
            logger.warning("could not cancel %s: %r", status_url, exc)

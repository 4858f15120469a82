"""The jobs API over HTTP: what a submit takes from the request (webhook, Prefer: wait,
Idempotency-Key, the caller), the submit's answer, and the status, result and cancel routes.
Mounted with the health app at /api/v1; every error is in our shape."""

from __future__ import annotations

import re
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from api.errors import REQUEST_ID_HEADER, error_response, request_id_from
from api.rate_limit import caller_of
from api.schemas import ErrorResponse, InpaintResponse, utc_timestamp
from config.settings import Settings
from jobs.model import (
    FINISHED,
    JOBS_PREFIX,
    JobAccepted,
    JobRecord,
    JobStatus,
    Submission,
)
from jobs.store import JobStore, wait_finished
from jobs.webhooks import check_target
from utils.exceptions import InpaintError, ValidationException

MAX_WAIT_S = 60
_PREFER_WAIT = re.compile(r"(?:^|[;,\s])wait\s*=\s*(\d+)", re.IGNORECASE)
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def prefer_wait(value: str | None) -> int:
    """Seconds of `Prefer: wait=N` (RFC 7240), at most MAX_WAIT_S; 0 when absent."""
    found = _PREFER_WAIT.search(value or "")
    return min(int(found.group(1)), MAX_WAIT_S) if found else 0


class JobsApi:
    """The jobs API of one entry replica over its store."""

    def __init__(self, store: JobStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    async def split_request(self, raw: Any) -> tuple[Any, str | None]:
        """The `request` part without `webhook` (the flow's own fields), and the webhook URL
        once it is known to be acceptable (else 422)."""
        if not isinstance(raw, dict) or "webhook" not in raw:
            return raw, None
        rest = {k: v for k, v in raw.items() if k != "webhook"}
        url = raw["webhook"]
        if url is None:
            return rest, None
        if not isinstance(url, str):
            raise ValidationException("invalid request: webhook: must be a URL string")
        settings = self.settings
        return rest, await check_target(
            url, settings.webhook_allow_private, settings.webhook_secret
        )

    async def submit(
        self,
        http: Request,
        route: str,
        request_id: str,
        request: dict[str, Any],
        webhook: str | None,
        files: dict[str, bytes],
        total_steps: int,
    ) -> JobRecord:
        key = http.headers.get("idempotency-key")
        if key is not None and not _IDEMPOTENCY_KEY.match(key):
            raise ValidationException("Idempotency-Key must be 1-255 visible ASCII characters")
        return await self.store.submit(
            Submission(
                route=route,
                request=request,
                files=files,
                owner=caller_of(http.scope),
                request_id=request_id,
                total_steps=total_steps,
                webhook=webhook,
                idempotency_key=key,
            )
        )

    async def respond(
        self, http: Request, request_id: str, outcome: JobRecord | InpaintError
    ) -> JSONResponse:
        """202 with the job's URLs; with `Prefer: wait=N`, the result itself when the job
        finishes within N s."""
        if isinstance(outcome, InpaintError):
            return self.error(outcome, request_id)
        record = outcome
        wait_s = prefer_wait(http.headers.get("prefer"))
        headers = {REQUEST_ID_HEADER: request_id}
        if wait_s:
            headers["Preference-Applied"] = f"wait={wait_s}"
            try:
                record = await wait_finished(self.store, record.id, record.owner, wait_s)
            except InpaintError:  # the job exists; its store answers polls again later
                pass
            if record.state in FINISHED:
                response = await self._result(record.id, record.owner, request_id)
                response.headers.update(headers)
                return response
        accepted = JobAccepted(
            request_id=request_id,
            timestamp=utc_timestamp(),
            job_id=record.id,
            state=record.state,
            status_url=f"{JOBS_PREFIX}/{record.id}",
            result_url=f"{JOBS_PREFIX}/{record.id}/result",
        )
        headers["Location"] = accepted.status_url
        return JSONResponse(accepted.model_dump(), status_code=202, headers=headers)

    async def _result(self, job_id: str, owner: str, request_id: str) -> JSONResponse:
        try:
            body, job_request_id = await self.store.result(job_id, owner)
        except InpaintError as error:
            return self.error(error, request_id)
        # The job answers under the id of the request that submitted it.
        body = {**body, "request_id": job_request_id}
        return JSONResponse(body, headers={REQUEST_ID_HEADER: job_request_id})

    def error(self, error: InpaintError, request_id: str) -> JSONResponse:
        response = error_response(error, request_id)
        if error.status in (HTTPStatus.TOO_MANY_REQUESTS, HTTPStatus.SERVICE_UNAVAILABLE):
            response.headers["Retry-After"] = str(self.settings.retry_after_s)
        return response

    def router(self) -> APIRouter:
        return job_router(lambda: self)


def _documented(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


def job_router(api: Callable[[], JobsApi]) -> APIRouter:
    """`api()` gives the running replica's JobsApi (it exists once the service started)."""
    router = APIRouter(prefix="/jobs", tags=["jobs"])
    not_found = {404: _documented("job_not_found: unknown, expired, or another key's job")}

    def status(record: JobRecord, request_id: str) -> JSONResponse:
        return JSONResponse(record.status().model_dump(), headers={REQUEST_ID_HEADER: request_id})

    @router.get("/{job_id}", response_model=JobStatus, responses=not_found)
    async def job_status(job_id: str, request: Request) -> JSONResponse:
        """The job's state, and while it paints, step k of n and an ETA."""
        request_id = request_id_from(dict(request.headers))
        jobs = api()
        try:
            return status(await jobs.store.get(job_id, caller_of(request.scope)), request_id)
        except InpaintError as error:
            return jobs.error(error, request_id)

    @router.get(
        "/{job_id}/result",
        response_model=InpaintResponse,
        responses={
            **not_found,
            409: _documented("job_not_done: the job is queued or running"),
            410: _documented("job_cancelled: the job was cancelled and has no result"),
            422: _documented("the job failed: its error, as the synchronous route answers it"),
            502: _documented("job_runner_lost: the process running the job died; submit again"),
            504: _documented("the job failed: processing took longer than PROCESSING_TIMEOUT_S"),
        },
    )
    async def job_result(job_id: str, request: Request) -> JSONResponse:
        """The synchronous route's response body, once the job is done; a failed job answers
        with its error (status and body)."""
        request_id = request_id_from(dict(request.headers))
        return await api()._result(job_id, caller_of(request.scope), request_id)

    @router.delete("/{job_id}", response_model=JobStatus, responses=not_found)
    async def cancel_job(job_id: str, request: Request) -> JSONResponse:
        """Cancel a queued or running job (SD stops at its next step); a finished job is
        left as it is. Answers the job's status."""
        request_id = request_id_from(dict(request.headers))
        jobs = api()
        try:
            return status(await jobs.store.cancel(job_id, caller_of(request.scope)), request_id)
        except InpaintError as error:
            return jobs.error(error, request_id)

    return router


def document_job_submits(spec: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """The submit routes answer 202 (BentoML documents every route as 200)."""
    for path in paths:
        responses = spec["paths"][path]["post"]["responses"]
        # BentoML's spec keys statuses by int until it is serialised.
        ok = next((status for status in responses if str(status) == "200"), None)
        accepted = responses.pop(ok) if ok is not None else {}
        accepted["description"] = (
            "The job is queued; poll status_url, then fetch result_url. With `Prefer: wait=N` "
            "(N <= 60) the answer is the result itself (200) when the job ends within N s"
        )
        responses["202"] = accepted
        responses["409"] = {"description": "Idempotency-Key reused with another request"}
        responses["429"] = {"description": "too_many_jobs: JOB_MAX_PER_KEY outstanding"}
    return spec

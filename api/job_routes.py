"""HTTP routes of the jobs API: status, result and cancel (submitting is a BentoML route).

Mounted with the health app at /api/v1; every error is in our shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from api.errors import REQUEST_ID_HEADER, error_response, request_id_from
from api.jobs import JobStatus, JobStore
from api.schemas import ErrorResponse, InpaintResponse
from utils.exceptions import InpaintError


class JobSource(Protocol):
    jobs: JobStore


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


def job_router(service: Callable[[], JobSource]) -> APIRouter:
    """`service()` returns the running entry service, which holds the job table."""
    router = APIRouter(prefix="/jobs", tags=["jobs"])

    @router.get(
        "/{job_id}",
        response_model=JobStatus,
        responses={404: _error("job_not_found: unknown or expired job id")},
    )
    async def job_status(job_id: str, request: Request) -> JSONResponse:
        """The job's state, and while it paints, step k of n and an ETA."""
        request_id = request_id_from(dict(request.headers))
        try:
            store = service().jobs
            job = await store.refresh(store.get(job_id))
        except InpaintError as error:
            return error_response(error, request_id)
        return _json(job.status().model_dump(), request_id)

    @router.get(
        "/{job_id}/result",
        response_model=InpaintResponse,
        responses={
            404: _error("job_not_found: unknown or expired job id"),
            409: _error("job_not_done: the job is queued or running"),
            410: _error("job_cancelled: the job was cancelled and has no result"),
            422: _error("the job failed: its error, as the synchronous route answers it"),
            503: _error("the job failed: a model is not loaded or the runners are at capacity"),
            504: _error("the job failed: processing took longer than PROCESSING_TIMEOUT_S"),
        },
    )
    async def job_result(job_id: str, request: Request) -> JSONResponse:
        """The synchronous route's response body, once the job is done; a failed job answers
        with its error (status and body)."""
        try:
            job = service().jobs.get(job_id)
        except InpaintError as error:
            return error_response(error, request_id_from(dict(request.headers)))
        try:
            body = job.result()
        except InpaintError as error:
            return error_response(error, job.request_id)
        return _json(body.model_dump(mode="json"), job.request_id)

    @router.delete(
        "/{job_id}",
        response_model=JobStatus,
        responses={404: _error("job_not_found: unknown or expired job id")},
    )
    async def cancel_job(job_id: str, request: Request) -> JSONResponse:
        """Cancel a queued or running job (SD stops at its next step); a finished job is
        left as it is. Answers the job's status."""
        request_id = request_id_from(dict(request.headers))
        try:
            store = service().jobs
            job = await store.cancel(store.get(job_id))
        except InpaintError as error:
            return error_response(error, request_id)
        return _json(job.status().model_dump(), request_id)

    return router


def _json(body: dict[str, Any], request_id: str) -> JSONResponse:
    return JSONResponse(body, headers={REQUEST_ID_HEADER: request_id})


def document_job_submits(spec: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """The submit routes answer 202 (BentoML documents every route as 200)."""
    for path in paths:
        responses = spec["paths"][path]["post"]["responses"]
        # BentoML's spec keys statuses by int until it is serialised.
        ok = next((status for status in responses if str(status) == "200"), None)
        accepted = responses.pop(ok) if ok is not None else {}
        accepted["description"] = "The job is queued; poll status_url, then fetch result_url"
        responses["202"] = accepted
    return spec

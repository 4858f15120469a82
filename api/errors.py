"""One rendering of every error: `{"success": false, "request_id", "timestamp", "error"}`."""

from __future__ import annotations

import re
import uuid

from starlette.responses import JSONResponse

from api.schemas import ErrorDetail, ErrorResponse, utc_timestamp
from utils.exceptions import InpaintError

REQUEST_ID_HEADER = "x-request-id"
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def request_id_from(headers: dict[str, str] | None) -> str:
    """The caller's X-Request-ID when it is sane, else a fresh one."""
    candidate = (headers or {}).get(REQUEST_ID_HEADER, "")
    if _CLIENT_REQUEST_ID.match(candidate):
        return candidate
    return uuid.uuid4().hex


def error_body(error: InpaintError, request_id: str) -> dict[str, object]:
    # A message may quote the client's input, lone surrogates included; UTF-8 cannot carry
    # those, so they are escaped rather than crash the response.
    message = error.message.encode("utf-8", "backslashreplace").decode("utf-8")
    return ErrorResponse(
        request_id=request_id,
        timestamp=utc_timestamp(),
        error=ErrorDetail(code=error.code, message=message),
    ).model_dump()


def error_response(error: InpaintError, request_id: str) -> JSONResponse:
    return JSONResponse(
        error_body(error, request_id),
        status_code=int(error.status),
        headers={REQUEST_ID_HEADER: request_id},
    )

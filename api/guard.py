"""ASGI middleware that vets uploads to the inference routes before BentoML parses them.

BentoML's own parsing answers malformed input in its own error shape, treats a text value in
a file field as a URL to download, and lets some bad bytes through as 500s. This guard reads
the body once (bounded by the size limit), checks the multipart form, answers problems with
our JSON errors, and replays the body unchanged to BentoML. It also stamps every request with
an X-Request-ID that the service echoes in its response.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.datastructures import FormData, Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import REQUEST_ID_HEADER, error_response, request_id_from
from utils.exceptions import (
    FileTooLargeException,
    InpaintError,
    MalformedRequestException,
    UnsupportedMediaTypeException,
    ValidationException,
)

FILE_FIELDS = ("image", "mask")
FORM_FIELDS = frozenset({"image", "mask", "request"})
# Room for the JSON `request` part and the multipart framing around two files.
FORM_OVERHEAD = 1024 * 1024


class RequestGuard:
    def __init__(self, app: ASGIApp, paths: Iterable[str], max_file_size: int) -> None:
        self.app = app
        self.paths = frozenset(paths)
        self.max_file_size = max_file_size
        self.max_body = len(FILE_FIELDS) * max_file_size + FORM_OVERHEAD

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        request_id = request_id_from(dict(headers))
        scope = {**scope, "headers": _with_request_id(scope["headers"], request_id)}
        try:
            body = await self._vetted_body(scope, receive, headers)
        except InpaintError as error:
            await error_response(error, request_id)(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _vetted_body(self, scope: Scope, receive: Receive, headers: Headers) -> bytes:
        if headers.get("content-type", "").split(";")[0].strip().lower() != "multipart/form-data":
            raise UnsupportedMediaTypeException(
                "send multipart/form-data with a file part `image`, an optional file part "
                "`mask` and a JSON part `request`"
            )
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise FileTooLargeException(
                f"the body is {int(declared)} bytes; files may be at most "
                f"{self.max_file_size} bytes each"
            )
        body = await _read_body(receive, self.max_body, self.max_file_size)
        form = await _parse_form(scope, body)
        try:
            self._check_form(form)
            await _check_request_part(form)
        finally:
            await form.close()
        return body

    def _check_form(self, form: FormData) -> None:
        unknown = sorted(set(form.keys()) - FORM_FIELDS)
        if unknown:
            raise ValidationException(
                f"unknown form field(s) {', '.join(unknown)}; expected image, mask, request"
            )
        if "image" not in form:
            raise ValidationException("the file part `image` is required")
        for name in FORM_FIELDS:
            values = form.getlist(name)
            if len(values) > 1:
                raise ValidationException(f"send at most one `{name}` part")
        for name in FILE_FIELDS:
            value = form.get(name)
            if value is None:
                continue
            if not isinstance(value, UploadFile):
                raise ValidationException(
                    f"`{name}` must be uploaded as a file (curl -F '{name}=@photo.png'); "
                    "URLs and text are not accepted"
                )
            if value.size is not None and value.size > self.max_file_size:
                raise FileTooLargeException(
                    f"`{name}` is {value.size} bytes; the limit is {self.max_file_size} bytes"
                )


async def _read_body(receive: Receive, limit: int, max_file_size: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise MalformedRequestException("the client disconnected before the body ended")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise FileTooLargeException(
                f"the body exceeds {limit} bytes; files may be at most {max_file_size} bytes each"
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _parse_form(scope: Scope, body: bytes) -> FormData:
    request = Request({**scope, "app": None} if "app" not in scope else scope, _replay(body))
    try:
        return await request.form(max_files=8, max_fields=8, max_part_size=FORM_OVERHEAD)
    except (MultiPartException, HTTPException, ValueError, KeyError) as exc:
        detail = getattr(exc, "detail", None) or getattr(exc, "message", None) or str(exc)
        raise MalformedRequestException(f"the multipart body cannot be parsed: {detail}") from exc


async def _check_request_part(form: FormData) -> None:
    """BentoML json.loads the `request` part; make sure that cannot fail on bad bytes."""
    value = form.get("request")
    if value is None:
        return
    raw = await value.read() if isinstance(value, UploadFile) else value.encode()
    try:
        json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedRequestException(f"the `request` part is not valid JSON: {exc}") from exc


def _with_request_id(raw_headers: list[tuple[bytes, bytes]], request_id: str) -> list:
    kept = [(k, v) for k, v in raw_headers if k.lower() != REQUEST_ID_HEADER.encode()]
    return [*kept, (REQUEST_ID_HEADER.encode(), request_id.encode())]


def _replay(body: bytes, receive: Receive | None = None) -> Receive:
    """A `receive` that yields the buffered body once, then defers to the real one."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        if receive is not None:
            return await receive()
        return {"type": "http.disconnect"}

    return replay

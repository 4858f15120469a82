"""ASGI middleware that vets uploads to the inference routes before BentoML parses them.

BentoML's own parsing answers malformed input in its own error shape, treats a text value in
a file field as a URL to download, names its temporary files after the client's file names
(a 300-character or NUL-bearing name is a 500) and only knows the lower-case
`multipart/form-data`. This guard reads the body once (bounded by the size limit), checks the
multipart form against the fields the route takes, answers problems with our JSON errors, and
hands BentoML a canonical re-encoding of the same parts: lower-case content type, fresh
boundary, file parts named after their field. It also stamps every request with an
X-Request-ID that the service echoes in its response.

Slow senders are bounded too: a body must arrive within `read_timeout_s` (else 408
`upload_timeout`), and the bodies being received at once may hold at most `receiving_bytes`
(each counts for its declared Content-Length, or the body limit without one; beyond it 503
`overloaded` with Retry-After), so stalled uploads cannot pile up memory or connections.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Collection, Mapping
from typing import Any

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
    OverloadedException,
    UnsupportedMediaTypeException,
    UploadTimeoutException,
    ValidationException,
)

# Every file part a route may take; the body limit allows for all of them.
FILE_FIELDS = ("image", "mask")
REQUEST_FIELD = "request"
# Room for the JSON `request` part and the multipart framing around two files.
FORM_OVERHEAD = 1024 * 1024
# No valid `request` nests deeper than 3 levels; this bound keeps parsers far from recursion.
MAX_JSON_DEPTH = 32


class RequestGuard:
    """`routes` maps each guarded path to the file fields it takes (from FILE_FIELDS)."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Mapping[str, Collection[str]],
        max_file_size: int,
        read_timeout_s: float = 60.0,
        receiving_bytes: int | None = None,
        retry_after_s: int = 5,
    ) -> None:
        self.app = app
        self.routes = {path: tuple(fields) for path, fields in routes.items()}
        self.max_file_size = max_file_size
        self.max_body = len(FILE_FIELDS) * max_file_size + FORM_OVERHEAD
        self.read_timeout_s = read_timeout_s
        self.receiving_bytes = receiving_bytes or 8 * self.max_body
        self.retry_after_s = retry_after_s
        self.receiving = 0  # bytes reserved by the bodies being read now

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.routes:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        request_id = request_id_from(dict(headers))
        try:
            form = await self._vetted_form(scope, receive, headers, self.routes[scope["path"]])
            try:
                body, content_type = await _encode_form(form)
            finally:
                await form.close()
        except InpaintError as error:
            response = error_response(error, request_id)
            if isinstance(error, OverloadedException):
                response.headers["Retry-After"] = str(self.retry_after_s)
            await response(scope, receive, send)
            return
        raw_headers = _replace_headers(
            scope["headers"],
            {
                "content-type": content_type,
                "content-length": str(len(body)),
                REQUEST_ID_HEADER: request_id,
            },
        )
        await self.app({**scope, "headers": raw_headers}, _replay(body, receive), send)

    async def _vetted_form(
        self, scope: Scope, receive: Receive, headers: Headers, file_fields: tuple[str, ...]
    ) -> FormData:
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
        body = await self._read_bounded(receive, declared)
        form = await _parse_form(scope, body)
        try:
            self._check_form(form, file_fields)
            await _check_request_part(form)
        except InpaintError:
            await form.close()
            raise
        return form

    async def _read_bounded(self, receive: Receive, declared: str | None) -> bytes:
        expected = int(declared) if declared is not None and declared.isdigit() else self.max_body
        if self.receiving + expected > self.receiving_bytes:
            raise OverloadedException(
                f"{self.receiving} upload bytes are being received already (at most "
                f"{self.receiving_bytes}); retry shortly"
            )
        self.receiving += expected
        try:
            async with asyncio.timeout(self.read_timeout_s):
                return await _read_body(receive, min(expected, self.max_body), self.max_file_size)
        except TimeoutError:
            raise UploadTimeoutException(
                f"the body did not arrive within {self.read_timeout_s:g} s"
            ) from None
        finally:
            self.receiving -= expected

    def _check_form(self, form: FormData, file_fields: tuple[str, ...]) -> None:
        allowed = (*file_fields, REQUEST_FIELD)
        unknown = sorted(set(form.keys()) - set(allowed))
        if unknown:
            raise ValidationException(
                f"unknown form field(s) {', '.join(unknown)}; this route takes {', '.join(allowed)}"
            )
        if "image" not in form:
            raise ValidationException("the file part `image` is required")
        for name in allowed:
            if len(form.getlist(name)) > 1:
                raise ValidationException(f"send at most one `{name}` part")
        for name in file_fields:
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
    # Starlette's parser wants the lower-case media type; `Multipart/Form-Data` is legal too.
    content_type = Headers(scope=scope).get("content-type", "")
    media_type, _, params = content_type.partition(";")
    normal = f"{media_type.strip().lower()};{params}" if params else media_type.strip().lower()
    headers = _replace_headers(scope["headers"], {"content-type": normal})
    request_scope = {**scope, "headers": headers}
    request_scope.setdefault("app", None)
    request = Request(request_scope, _replay(body))
    try:
        return await request.form(max_files=8, max_fields=8, max_part_size=FORM_OVERHEAD)
    except (MultiPartException, HTTPException, ValueError, KeyError) as exc:
        detail = getattr(exc, "detail", None) or getattr(exc, "message", None) or str(exc)
        raise MalformedRequestException(f"the multipart body cannot be parsed: {detail}") from exc


async def _check_request_part(form: FormData) -> None:
    """BentoML json.loads the `request` part; make sure that cannot fail or recurse."""
    value = form.get(REQUEST_FIELD)
    if value is None:
        return
    raw = await value.read() if isinstance(value, UploadFile) else value.encode()
    if isinstance(value, UploadFile):
        await value.seek(0)
    try:
        parsed = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedRequestException(f"the `request` part is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise MalformedRequestException(_too_deep()) from exc
    if _depth(parsed) > MAX_JSON_DEPTH:
        raise MalformedRequestException(_too_deep())


def _too_deep() -> str:
    return f"the `request` part nests more than {MAX_JSON_DEPTH} levels deep"


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest in a parsed JSON value (iterative: no recursion)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


async def _encode_form(form: FormData) -> tuple[bytes, str]:
    """The vetted parts as a fresh multipart body, and its content type.

    File parts keep their bytes but are named after their field: the client's file name means
    nothing to the service, and BentoML would build a path from it.
    """
    parts: list[tuple[str, bytes, bool]] = []
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            parts.append((name, await value.read(), True))
        else:
            parts.append((name, value.encode("utf-8"), False))
    boundary = secrets.token_hex(16)
    while any(boundary.encode() in data for _, data, _ in parts):
        boundary = secrets.token_hex(16)
    chunks: list[bytes] = []
    for name, data, is_file in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{name}"' if is_file else "")
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        if is_file:
            head += "Content-Type: application/octet-stream\r\n"
        chunks += [head.encode(), b"\r\n", data, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def _replace_headers(
    raw_headers: list[tuple[bytes, bytes]], replacements: Mapping[str, str]
) -> list[tuple[bytes, bytes]]:
    names = {name.encode() for name in replacements}
    kept = [(k, v) for k, v in raw_headers if k.lower() not in names]
    return kept + [(k.encode(), v.encode("latin-1")) for k, v in replacements.items()]


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

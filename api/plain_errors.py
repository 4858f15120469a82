"""ASGI middleware: the framework's own 404 and 405 answers, in our JSON error body.

BentoML's router and the mounted apps answer an unknown path or a wrong method with plain
text (or FastAPI's `{"detail": ...}`). Whoever produced it, a 404 or 405 that is not already
our error body is replaced by one (`not_found`, `method_not_allowed`), keeping `Allow`.
A mount (the health app at /api/v1) can swallow a wrong-method request to a POST route and
call it a 404; for the routes named in `post_routes` that is a 405 with `Allow: POST`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response, request_id_from
from utils.exceptions import InpaintError, MethodNotAllowedException, NotFoundException

_REWRITTEN = frozenset({404, 405})
# Framework 404/405 bodies are a few bytes; anything larger is someone's deliberate page.
_MAX_BUFFERED = 64 * 1024


class PlainErrorsToJson:
    def __init__(self, app: ASGIApp, post_routes: Iterable[str] = ()) -> None:
        self.app = app
        self.post_routes = frozenset(post_routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        body = bytearray()
        passing = True

        async def intercept(message: Message) -> None:
            nonlocal start, passing
            if message["type"] == "http.response.start":
                passing = message["status"] not in _REWRITTEN
                if passing:
                    await send(message)
                else:
                    start = message
                return
            if passing or message["type"] != "http.response.body":
                await send(message)
                return
            body.extend(message.get("body", b""))
            if len(body) > _MAX_BUFFERED:
                passing = True
                await send(start)  # type: ignore[arg-type]
                await send({**message, "body": bytes(body)})
                return
            if not message.get("more_body", False):
                await self._finish(scope, start, bytes(body), send)  # type: ignore[arg-type]

        await self.app(scope, receive, intercept)

    async def _finish(self, scope: Scope, start: Message, body: bytes, send: Send) -> None:
        if _is_ours(body):
            await send(start)
            await send({"type": "http.response.body", "body": body})
            return
        allow = Headers(raw=start.get("headers", [])).get("allow")
        if scope["path"] in self.post_routes:
            allow = "POST"
        if start["status"] == 405 or scope["path"] in self.post_routes:
            error: InpaintError = MethodNotAllowedException(
                f"{scope['method']} is not allowed on {scope['path']}; allowed: "
                f"{allow or 'see /docs'}"
            )
        else:
            error = NotFoundException(f"no route {scope['path']}; see /docs for the API")
        response = error_response(error, request_id_from(dict(Headers(scope=scope))))
        if allow:
            response.headers["allow"] = allow

        async def no_body() -> Message:
            return {"type": "http.disconnect"}

        await response(scope, no_body, send)


def _is_ours(body: bytes) -> bool:
    try:
        parsed = json.loads(body)
    except ValueError:
        return False
    return isinstance(parsed, dict) and parsed.get("success") is False and "error" in parsed

"""Per-request observation: stage timings, the request counter and one log line per request.

`ObserveMiddleware` wraps every /api/v1 request in a `RequestRecord` held in a context
variable; the flows time their stages with `with stage("decode"):`, the auth middleware notes
the caller's key id, and when the response is done the middleware counts the request, observes
one histogram sample per stage, and logs one line (one JSON object with LOG_FORMAT=json).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import REQUEST_ID_HEADER, request_id_from
from utils.metrics import metrics

logger = logging.getLogger("inpaint.access")

# Probes call these every few seconds; they are counted, and logged only at DEBUG.
QUIET_ROUTES = frozenset({"health", "ready"})
# Enough for our error bodies; a larger error body is not ours and has no code to read.
MAX_ERROR_BODY = 64 * 1024


@dataclass
class RequestRecord:
    route: str
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    key_id: str | None = None


_current: ContextVar[RequestRecord | None] = ContextVar("inpaint_request", default=None)


def current_record() -> RequestRecord | None:
    """The record of the request being served, None outside ObserveMiddleware."""
    return _current.get()


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Time the block as stage `name` of the current request (summed if it repeats)."""
    record = _current.get()
    started = time.perf_counter()
    try:
        yield
    finally:
        if record is not None:
            elapsed = time.perf_counter() - started
            record.timings[name] = record.timings.get(name, 0.0) + elapsed


class ObserveMiddleware:
    """Counts, times and logs every request under `prefix`. `routes` are the names the
    `route` label may take (the first path segment after the prefix); any other path counts
    as "other", so that a scan of random URLs cannot grow the label set."""

    def __init__(self, app: ASGIApp, routes: Iterable[str], prefix: str = "/api/v1") -> None:
        self.app = app
        self.routes = frozenset(routes)
        self.prefix = prefix.rstrip("/") + "/"

    def route_of(self, path: str) -> str:
        name = path[len(self.prefix) :].split("/", 1)[0]
        return name if name in self.routes else "other"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        record = RequestRecord(self.route_of(scope["path"]))
        response = _ResponseFacts()
        started = time.perf_counter()
        done = False

        def finish() -> None:
            nonlocal done
            if not done:
                done = True
                request_id = response.request_id or request_id_from(dict(Headers(scope=scope)))
                self._record(scope, record, response, request_id, time.perf_counter() - started)

        async def observed_send(message: Message) -> None:
            response.see(message)
            # Recorded before the last byte leaves: a client that scrapes /metrics right
            # after its response then finds its request counted.
            if message["type"] == "http.response.body" and not message.get("more_body"):
                finish()
            await send(message)

        token = _current.set(record)
        try:
            await self.app(scope, receive, observed_send)
        finally:
            _current.reset(token)
            finish()  # the app raised, or ended without a response

    def _record(
        self,
        scope: Scope,
        record: RequestRecord,
        response: _ResponseFacts,
        request_id: str,
        elapsed_s: float,
    ) -> None:
        m = metrics()
        m.requests.labels(route=record.route, status=str(response.status)).inc()
        for name, seconds in record.timings.items():
            m.stage_duration.labels(route=record.route, stage=name).observe(seconds)
        error_code = response.error_code()
        stages_ms = {name: round(s * 1000, 1) for name, s in record.timings.items()}
        level = logging.DEBUG if record.route in QUIET_ROUTES else logging.INFO
        stages_text = " ".join(f"{name}={ms:.0f}" for name, ms in stages_ms.items())
        logger.log(
            level,
            "%s %s %s %d%s in %.0f ms%s",
            scope["method"],
            scope["path"],
            request_id,
            response.status,
            f" {error_code}" if error_code else "",
            elapsed_s * 1000,
            f" [{stages_text}]" if stages_text else "",
            extra={
                "event": "request",
                "request_id": request_id,
                "method": scope["method"],
                "route": record.route,
                "path": scope["path"],
                "status": response.status,
                "error_code": error_code,
                "duration_ms": round(elapsed_s * 1000, 1),
                "stages_ms": stages_ms,
                "key_id": record.key_id,
            },
        )


@dataclass
class _ResponseFacts:
    """What the middleware learns from the response messages as they pass."""

    status: int = 500  # stays 500 when the app raised before answering
    request_id: str = ""
    json_error: bool = False
    body: bytearray = field(default_factory=bytearray)

    def see(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            headers = Headers(raw=message.get("headers", []))
            self.request_id = headers.get(REQUEST_ID_HEADER, "")
            content_type = headers.get("content-type", "")
            self.json_error = self.status >= 400 and content_type.startswith("application/json")
        elif message["type"] == "http.response.body" and self.json_error:
            if len(self.body) < MAX_ERROR_BODY:
                self.body.extend(message.get("body", b""))

    def error_code(self) -> str | None:
        """Our error shape's `error.code`; None for a success or for someone else's error."""
        if not self.json_error:
            return None
        try:
            error = json.loads(bytes(self.body)).get("error")
        except (ValueError, AttributeError):
            return None
        code = error.get("code") if isinstance(error, dict) else None
        return code if isinstance(code, str) else None

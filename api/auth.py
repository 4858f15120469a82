"""Optional API keys: with API_KEYS set, /api/v1 (but health and ready) needs a key.

A key comes in `X-API-Key: KEY` or `Authorization: Bearer KEY` and is compared with every
configured key in constant time. Keys are never logged: the request log and the rate limiter
know a caller by `key_id`, a short hash of the key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import error_response, request_id_from
from api.observe import current_record
from utils.exceptions import UnauthorizedException

OPEN_API_PATHS = frozenset({"/api/v1/health", "/api/v1/ready"})
DOCS_PATHS = frozenset({"/docs", "/redoc", "/openapi.json"})
# Where the rate limiter finds the caller's identity (Starlette's request.state).
CLIENT_STATE_KEY = "inpaint_client"


def key_id(key: str) -> str:
    """A stable name for a key that does not reveal it (logs, metrics, bucket names)."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def presented_key(headers: Headers) -> str | None:
    if "x-api-key" in headers:
        return headers["x-api-key"]
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


def matching_key(candidate: str, keys: Sequence[bytes]) -> bool:
    """Whether `candidate` is one of `keys`; compares with all of them, in constant time."""
    given = candidate.encode()
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, key)
    return found


class ApiKeyAuth:
    def __init__(
        self,
        app: ASGIApp,
        keys: Sequence[str],
        metrics_require_key: bool = False,
        docs_require_key: bool = False,
    ) -> None:
        self.app = app
        self.keys = [key.encode() for key in keys]
        self.metrics_require_key = metrics_require_key
        self.docs_require_key = docs_require_key

    def protects(self, path: str) -> bool:
        if path.startswith("/api/v1/"):
            return path not in OPEN_API_PATHS
        if path == "/metrics":
            return self.metrics_require_key
        return path in DOCS_PATHS and self.docs_require_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # OPTIONS: a CORS preflight never carries credentials.
        if (
            scope["type"] != "http"
            or scope["method"] == "OPTIONS"
            or not self.protects(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        key = presented_key(headers)
        if key is None or not matching_key(key, self.keys):
            message = (
                "send an API key in the X-API-Key header or as `Authorization: Bearer KEY`"
                if key is None
                else "the API key is not valid"
            )
            response = error_response(
                UnauthorizedException(message), request_id_from(dict(headers))
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="inpaint-anything"'
            await response(scope, receive, send)
            return
        caller = key_id(key)
        record = current_record()
        if record is not None:
            record.key_id = caller
        scope.setdefault("state", {})[CLIENT_STATE_KEY] = f"key:{caller}"
        await self.app(scope, receive, send)

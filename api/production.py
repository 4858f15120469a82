"""The production middleware of the entry service, in their one correct order.

Outermost first: observation (so that 401s and 429s are counted and logged), API keys, then
the rate limit (an unauthenticated request never drains a key's bucket). They go after CORS
(whose preflight answers need none of them) and before the request guard.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from api.auth import ApiKeyAuth
from api.observe import ObserveMiddleware
from api.rate_limit import API_PREFIX, RateLimit, make_buckets
from config.settings import Settings


class UnsafeProductionSettings(RuntimeError):
    """ENVIRONMENT=production with settings that would leave the server open by accident."""


def check_production_settings(settings: Settings) -> None:
    """Refuse to serve an open API in production unless ALLOW_ANONYMOUS=true says it is meant.

    Raised at import of the service, so that `bentoml serve` (and a container) stops at once
    with this message instead of serving the GPUs to anyone who finds the address."""
    if settings.is_production and not settings.api_keys and not settings.allow_anonymous:
        raise UnsafeProductionSettings(
            "ENVIRONMENT=production needs API_KEYS (comma-separated keys that callers send in "
            "X-API-Key or `Authorization: Bearer`). To serve without keys on purpose, e.g. "
            "behind a proxy that authenticates, set ALLOW_ANONYMOUS=true. See docs/deployment.md."
        )


class _LazyRateLimit(RateLimit):
    """Opens its bucket store (a Redis client) in the worker that serves, not at import."""

    def __init__(self, app: Any, settings: Settings) -> None:
        super().__init__(app, make_buckets(settings), settings.rate_limit_costs)


def add_production_middleware(
    service: Any, settings: Settings, extra_routes: Iterable[str] = ()
) -> None:
    """Call once the service's APIs are defined: their routes under /api/v1, and the names
    in `extra_routes` (routes of mounted apps), are the values of the metrics' `route` label.
    Raises UnsafeProductionSettings first when the production settings leave the API open."""
    check_production_settings(settings)
    routes = {
        method.route.removeprefix(API_PREFIX).split("/", 1)[0]
        for method in service.apis.values()
        if method.route.startswith(API_PREFIX)
    }
    service.add_asgi_middleware(ObserveMiddleware, routes=sorted(routes | set(extra_routes)))
    if settings.api_keys:
        service.add_asgi_middleware(
            ApiKeyAuth,
            keys=settings.api_keys,
            metrics_require_key=settings.metrics_require_key,
            docs_require_key=settings.docs_require_key,
        )
    if settings.rate_limit_capacity:
        service.add_asgi_middleware(_LazyRateLimit, settings=settings)

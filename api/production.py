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


class _LazyRateLimit(RateLimit):
    """Opens its bucket store (a Redis client) in the worker that serves, not at import."""

    def __init__(self, app: Any, settings: Settings) -> None:
        super().__init__(app, make_buckets(settings), settings.rate_limit_costs)


def add_production_middleware(
    service: Any, settings: Settings, extra_routes: Iterable[str] = ()
) -> None:
    """Call once the service's APIs are defined: their routes under /api/v1, and the names
    in `extra_routes` (routes of mounted apps), are the values of the metrics' `route` label."""
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

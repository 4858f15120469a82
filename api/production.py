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
from api.rate_limit import RateLimit, make_buckets
from config.settings import Settings


class _LazyRateLimit(RateLimit):
    """Opens its bucket store (a Redis client) in the worker that serves, not at import."""

    def __init__(self, app: Any, settings: Settings) -> None:
        super().__init__(app, make_buckets(settings), settings.rate_limit_costs)


def add_production_middleware(service: Any, settings: Settings, routes: Iterable[str]) -> None:
    """`routes`: the names under /api/v1 that metrics label individually."""
    service.add_asgi_middleware(ObserveMiddleware, routes=list(routes))
    if settings.api_keys:
        service.add_asgi_middleware(
            ApiKeyAuth,
            keys=settings.api_keys,
            metrics_require_key=settings.metrics_require_key,
            docs_require_key=settings.docs_require_key,
        )
    if settings.rate_limit_capacity:
        service.add_asgi_middleware(_LazyRateLimit, settings=settings)

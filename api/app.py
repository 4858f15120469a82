"""The FastAPI app mounted at /api/v1 (health and readiness), and the /docs pages.

BentoML serves the inference routes itself (/api/v1/segment, /remove, /fill, /replace);
they take precedence over this mount. The readiness route asks the running service, which
asks each runner.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from api.pages import DOCS_CSP, VENDOR_URL, page_routes
from api.schemas import ErrorResponse, HealthResponse, ReadyResponse

VERSION = "0.1.0"
STARTED_AT = time.monotonic()
TITLE = "Inpaint Anything server"


class ReadinessSource(Protocol):
    async def readiness(self) -> ReadyResponse: ...


def create_health_app(service: Callable[[], ReadinessSource]) -> FastAPI:
    """Liveness and readiness; `service()` returns the running BentoML service instance."""
    app = FastAPI(title=TITLE, version=VERSION, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/health", response_model=HealthResponse, tags=["health"])
    async def health() -> HealthResponse:
        """Liveness: the process answers. Does not touch the models."""
        return HealthResponse(version=VERSION, uptime_s=round(time.monotonic() - STARTED_AT, 3))

    @app.get(
        "/ready",
        response_model=ReadyResponse,
        tags=["health"],
        responses={503: {"model": ReadyResponse, "description": "a model is not loaded"}},
    )
    async def ready() -> JSONResponse:
        """Readiness: 200 only when every runner has its model loaded, else 503."""
        report = await service().readiness()
        return JSONResponse(report.model_dump(), status_code=200 if report.ready else 503)

    return app


ERROR_STATUSES = {
    "400": "Undecodable image, or a `request` part that is not valid JSON",
    "413": "A file over MAX_FILE_SIZE, or an image declaring more than MAX_IMAGE_PIXELS",
    "415": "The body is not multipart/form-data",
    "422": "An invalid field: point outside the image, mask size mismatch, empty prompt, ...",
    "500": "An unexpected server error (logged with the request id)",
    "503": "A model is not loaded",
    "504": "Processing took longer than PROCESSING_TIMEOUT_S",
}


def document_errors(spec: dict[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """Replace BentoML's generic error entries of our routes with our real error body."""
    schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(schema.pop("$defs", {}))
    schemas["ErrorResponse"] = schema
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    for path in paths:
        responses = spec["paths"][path]["post"]["responses"]
        for status in [s for s in responses if not str(s).startswith("2")]:
            del responses[status]
        for status, description in ERROR_STATUSES.items():
            responses[status] = {"description": description, "content": error}
    return spec


API_DESCRIPTION = (
    "Click an object in a photo: SAM segments it, LaMa removes it, Stable Diffusion fills it "
    "or replaces its surroundings. The editor is at `/`. Errors are always "
    '`{"success": false, "request_id", "timestamp", "error": {"code", "message"}}`.'
)


def create_docs_app(openapi_spec: Callable[[], dict[str, Any]]) -> Starlette:
    """Swagger UI at /docs and ReDoc at /redoc over the service's whole OpenAPI spec, with
    their scripts served from here (no CDN), and the editor's pages."""

    async def spec(_: Request) -> JSONResponse:
        document = openapi_spec()
        # BentoML's generic info embeds badge images from other hosts: the docs must load
        # nothing from elsewhere.
        document["info"] = {"title": TITLE, "version": VERSION, "description": API_DESCRIPTION}
        return JSONResponse(document)

    async def swagger(_: Request) -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{TITLE} - Swagger UI",
            swagger_js_url=f"{VENDOR_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{VENDOR_URL}/swagger-ui.css",
            swagger_favicon_url=f"{VENDOR_URL}/favicon-32x32.png",
            # Swagger UI would send the spec to validator.swagger.io for its badge.
            swagger_ui_parameters={"validatorUrl": None},
        )
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page

    async def redoc(_: Request) -> HTMLResponse:
        page = get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{TITLE} - ReDoc",
            redoc_js_url=f"{VENDOR_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{VENDOR_URL}/favicon-32x32.png",
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page

    return Starlette(
        routes=[
            Route("/openapi.json", spec, methods=["GET"]),
            Route("/docs", swagger, methods=["GET"]),
            Route("/redoc", redoc, methods=["GET"]),
            *page_routes(),
        ]
    )

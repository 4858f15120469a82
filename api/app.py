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
from config.settings import get_settings
from flows.capacity import server_capacity

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
        report.capacity = server_capacity(get_settings())
        return JSONResponse(report.model_dump(), status_code=200 if report.ready else 503)

    return app


IMAGE_TYPES = "image/png, image/jpeg, image/webp, image/bmp, image/tiff"
ERROR_STATUSES = {
    "400": "Undecodable image, or a `request` part that is not valid JSON (or nests deeper "
    "than 32 levels), or a multipart body that cannot be parsed",
    "401": "API_KEYS is set and the request has no valid key (X-API-Key or Bearer)",
    "404": "No such path",
    "405": "The path takes POST only",
    "413": "A file over MAX_FILE_SIZE, or an image declaring more than MAX_IMAGE_PIXELS",
    "415": "The body is not multipart/form-data",
    "422": "An invalid field: point outside the image, mask size mismatch, empty prompt, a part "
    "the route does not take, ...",
    "429": "The caller's rate limit is reached; retry after the Retry-After seconds",
    "503": "A model is not loaded, or the runners are at capacity (retry later)",
    "504": "Processing took longer than PROCESSING_TIMEOUT_S",
}


def document_routes(spec: dict[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """Our routes as the server really answers them: the error body and statuses that can
    occur (no 500: every failure a client can cause is a 4xx), and the limits it enforces."""
    schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(schema.pop("$defs", {}))
    schemas["ErrorResponse"] = schema
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    for path in paths:
        operation = spec["paths"][path]["post"]
        responses = operation["responses"]
        for status in [s for s in responses if not str(s).startswith("2")]:
            del responses[status]
        for status, description in ERROR_STATUSES.items():
            responses[status] = {"description": description, "content": error}
        operation["requestBody"]["required"] = True
        _document_form(operation["requestBody"]["content"]["multipart/form-data"])
    return spec


def _document_form(content: dict[str, Any]) -> None:
    """The multipart parts: file limits, at most one mask, and `request` required when the
    route has required fields (fill and replace need text_prompt)."""
    settings = get_settings()
    form = content["schema"]
    form["additionalProperties"] = False  # the guard refuses unknown parts
    properties = form["properties"]
    limits = (
        f"at most {settings.max_file_size} bytes and {settings.max_image_pixels} pixels; "
        "PNG, JPEG, WebP, BMP or TIFF"
    )
    properties["image"]["description"] = f"The photo: {limits}."
    if "mask" in properties:
        properties["mask"].update(
            maxItems=1,
            description=f"Optional, at most one file: the region (non-zero pixels, or the "
            f"painted alpha), the image's size; {limits}. Replaces SAM prompts.",
        )
    if "request" not in properties:  # /embedding takes the image alone
        _document_files(content, properties)
        return
    request = properties["request"]
    if request.get("required") and "request" not in form.setdefault("required", []):
        form["required"].append("request")
        request.pop("default", None)
    _document_prompt(form, takes_mask="mask" in properties)
    # The `request` part is JSON text, not a form value.
    content.setdefault("encoding", {})["request"] = {"contentType": "application/json"}
    _document_files(content, properties)


def _document_files(content: dict[str, Any], properties: dict[str, Any]) -> None:
    """File parts are images."""
    encoding = content.setdefault("encoding", {})
    for name in ("image", "mask"):
        if name in properties:
            encoding[name] = {"contentType": IMAGE_TYPES}


# SAM needs a click or a box (null is the same as leaving a field out). Spelled without
# `not`, which schemathesis 4.32 cannot evaluate over a form holding files.
_HAS_PROMPT = {
    "anyOf": [
        {"required": [name], "properties": {name: {"type": "array"}}}
        for name in ("point_coords", "box")
    ]
}


def _document_prompt(form: dict[str, Any], takes_mask: bool) -> None:
    """A route without a `mask` part needs SAM prompts in `request`. Where a mask may replace
    the prompts, the rule spans two parts; it stays in the descriptions, since a form-level
    combinator over file parts breaks schema-driven clients (schemathesis 4.32)."""
    request = form["properties"]["request"]
    if takes_mask:
        request["description"] = (
            "JSON: SAM prompts (point_coords or box) choose the object, unless a `mask` file "
            "is uploaded; then no prompts."
        )
        return
    request["description"] = "JSON: SAM prompts (point_coords or box) for the object."
    if "request" not in form.setdefault("required", []):
        form["required"].append("request")
    request.update(_HAS_PROMPT)
    request.pop("default", None)


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

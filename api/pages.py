"""The pages a browser opens: the editor at / and its static files under /static.

Everything the pages load is served from web/static (the page's own modules, and the pinned
packages that web/build.sh copies into web/static/vendor), so they work on a host without
internet and request nothing from any other host.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

WEB_STATIC = Path(__file__).resolve().parent.parent / "web" / "static"
STATIC_PATH = "/static"
VENDOR_URL = f"{STATIC_PATH}/vendor"
# The editor loads nothing from elsewhere; the CSP makes the browser hold it to that.
EDITOR_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; "
    "script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self' blob: data:; worker-src 'self' blob:"
)

# Cross-origin isolation: onnxruntime-web's threads need SharedArrayBuffer, which a browser
# gives only to an isolated page; every subresource must then opt in (all are same-origin).
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
}
ASSET_HEADERS = {**ISOLATION_HEADERS, "Cross-Origin-Resource-Policy": "same-origin"}

# Swagger UI and ReDoc are started by an inline script; ReDoc's sidebar would fetch its
# vendor's logo from a CDN, which img-src forbids (the browser never sends the request).
DOCS_CSP = (
    "default-src 'self'; img-src 'self' data:; script-src 'self' 'unsafe-inline'; "
    "style-src 'self' 'unsafe-inline'; connect-src 'self'; worker-src 'self' blob:"
)


class StaticAssets(StaticFiles):
    """web/static, revalidated on every load so a new release is never mixed with old files."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.setdefault("Cache-Control", "no-cache")
        # Workers (onnxruntime-web's threads) are scripts from here: they need the headers.
        response.headers.update(ASSET_HEADERS)
        return response


async def editor(_: Request) -> Response:
    return FileResponse(
        WEB_STATIC / "index.html",
        headers={
            "Cache-Control": "no-cache",
            "Content-Security-Policy": EDITOR_CSP,
            **ISOLATION_HEADERS,
        },
    )


def page_routes() -> list[BaseRoute]:
    """The editor at / (in place of BentoML's index page) and the files it loads."""
    return [
        Route("/", editor, methods=["GET"]),
        Mount(STATIC_PATH, StaticAssets(directory=WEB_STATIC, check_dir=False), name="static"),
    ]

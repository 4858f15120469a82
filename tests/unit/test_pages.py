"""The editor and docs pages: served locally, nothing from another host, every file present."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from api.app import create_docs_app
from api.pages import WEB_STATIC

SPEC = {"openapi": "3.0.2", "info": {"title": "x"}, "paths": {}}


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_docs_app(lambda: dict(SPEC)))


def local_urls(html: str) -> list[str]:
    urls = re.findall(r"""(?:src|href|spec-url)=["']([^"']+)["']""", html)
    urls += re.findall(r"""url: ?['"]([^'"]+)['"]""", html)
    return urls


@pytest.mark.parametrize("path", ["/", "/docs", "/redoc"])
def test_pages_load_only_from_this_server(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert "default-src 'self'" in response.headers["content-security-policy"]
    urls = local_urls(response.text)
    assert urls, "the page loads something"
    assert [u for u in urls if re.match(r"(https?:)?//", u)] == []
    for url in urls:
        if url.startswith("/static/"):
            assert client.get(url).status_code == 200, f"{url} (run web/build.sh)"


def test_the_editor_replaces_bentomls_index(client: TestClient) -> None:
    html = client.get("/").text
    assert 'data-testid="stage"' in html and "googletagmanager" not in html


def test_the_spec_carries_no_third_party_content(client: TestClient) -> None:
    info = client.get("/openapi.json").json()["info"]
    assert info["title"] == "Inpaint Anything server"
    assert "http" not in info["description"]


def test_every_module_import_resolves() -> None:
    for module in (WEB_STATIC / "js").glob("*.js"):
        for target in re.findall(r"""(?:from|import\()\s*['"]([^'"]+)['"]""", module.read_text()):
            resolved = (
                WEB_STATIC.parent / target.lstrip("/")
                if target.startswith("/")
                else (module.parent / target)
            )
            assert Path(resolved).resolve().is_file(), f"{module.name} imports {target}"


def test_the_editor_and_its_files_are_cross_origin_isolated(client: TestClient) -> None:
    """COOP/COEP on the page and every file it loads (workers included): without them the
    browser gives onnxruntime-web no SharedArrayBuffer, hence no threads."""
    page = client.get("/").headers
    assert page["cross-origin-opener-policy"] == "same-origin"
    assert page["cross-origin-embedder-policy"] == "require-corp"
    for path in ("/static/js/main.js", "/static/js/decoder.js", "/static/editor.css"):
        headers = client.get(path).headers
        assert headers["cross-origin-embedder-policy"] == "require-corp", path
        assert headers["cross-origin-resource-policy"] == "same-origin", path

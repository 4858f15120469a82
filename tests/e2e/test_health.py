"""Liveness, readiness and docs of the running server."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.conftest import SERVER_ENV, Server

pytestmark = pytest.mark.e2e


def test_health_is_live(server: Server) -> None:
    body = httpx.get(f"{server.url}/api/v1/health").json()
    assert body["status"] == "ok"
    assert body["version"] == "0.1.0"
    assert body["uptime_s"] > 0
    assert body["timestamp"].endswith("Z")


def test_ready_reports_every_model_and_says_they_are_demo(server: Server) -> None:
    response = httpx.get(f"{server.url}/api/v1/ready", timeout=30)
    assert response.status_code == 200
    body = response.json()
    assert body["ready"] is True
    assert body["demo_models"] is True
    assert set(body["models"]) == {"sam", "lama", "sd", "sam3"}
    names = (("sam", "sam-tiny"), ("lama", "lama-tiny"), ("sd", "sd-tiny"), ("sam3", "sam3-tiny"))
    for kind, name in names:
        model = body["models"][kind]
        assert model["loaded"] is True and model["error"] is None
        assert model["tag"].startswith(f"{name}:") and not model["tag"].endswith(":latest")
        assert model["device"] == "cpu"
        assert model["demo"] is True
        assert model["gpu"] is None
        assert model["process_memory_mb"] > 0
    assert body["models"]["sd"]["details"]["native_resolution"] == 256
    assert body["process_memory_mb"] > 0


def test_docs_cover_every_route(server: Server) -> None:
    page = httpx.get(f"{server.url}/docs")
    assert page.status_code == 200 and "swagger" in page.text.lower()
    assert httpx.get(f"{server.url}/redoc").status_code == 200
    spec = httpx.get(f"{server.url}/openapi.json").json()
    paths = spec["paths"]
    for route in ("segment", "remove", "fill", "replace", "health", "ready"):
        assert f"/api/v1/{route}" in paths, sorted(paths)
    remove = paths["/api/v1/remove"]["post"]
    assert "multipart/form-data" in remove["requestBody"]["content"]
    for status in ("400", "413", "415", "422", "503", "504"):
        schema = remove["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorResponse"}
    assert "error" in spec["components"]["schemas"]["ErrorResponse"]["properties"]


def test_cors_is_exactly_as_configured(server: Server) -> None:
    allowed = SERVER_ENV["ALLOWED_ORIGINS"]
    origin = {"Origin": allowed}
    health = httpx.get(f"{server.url}/api/v1/health", headers=origin)
    assert health.headers["access-control-allow-origin"] == allowed
    # Our own error responses carry it too (CORS is the outermost middleware of ours).
    error = httpx.post(f"{server.url}/api/v1/remove", json={}, headers=origin)
    assert error.status_code == 415
    assert error.headers["access-control-allow-origin"] == allowed
    preflight = httpx.options(
        f"{server.url}/api/v1/remove",
        headers={**origin, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == allowed
    # Any other origin gets no CORS grant, on a simple request and on a preflight.
    other = {"Origin": "https://elsewhere.example"}
    assert (
        "access-control-allow-origin"
        not in httpx.get(f"{server.url}/api/v1/health", headers=other).headers
    )
    refused = httpx.options(
        f"{server.url}/api/v1/remove",
        headers={**other, "Access-Control-Request-Method": "POST"},
    )
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers

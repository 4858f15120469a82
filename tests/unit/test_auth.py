"""API keys: which paths need one, both header styles, the 401 body, and keys kept out of logs."""

from __future__ import annotations

import json
import logging

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from api.auth import CLIENT_STATE_KEY, ApiKeyAuth, key_id
from api.observe import ObserveMiddleware
from config.settings import Settings

KEYS = ["first-secret-key", "second-secret-key"]


async def _echo(request: Request) -> JSONResponse:
    return JSONResponse({"caller": getattr(request.state, CLIENT_STATE_KEY, None)})


async def _text(_: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def _client(**options: bool) -> TestClient:
    app = Starlette(
        routes=[
            Route("/api/v1/segment", _echo, methods=["POST", "OPTIONS"]),
            Route("/api/v1/jobs/{job}", _echo, methods=["GET"]),
            *(Route(p, _text) for p in ("/api/v1/health", "/api/v1/ready", "/metrics", "/")),
            *(Route(p, _text) for p in ("/docs", "/redoc", "/openapi.json")),
        ]
    )
    guarded = ApiKeyAuth(app, keys=KEYS, **options)
    return TestClient(ObserveMiddleware(guarded, routes=["segment", "jobs", "health"]))


def test_a_request_without_a_valid_key_gets_401_in_our_shape() -> None:
    with _client() as client:
        missing = client.post("/api/v1/segment", headers={"X-Request-ID": "req-1"})
        wrong = client.post("/api/v1/segment", headers={"X-API-Key": "first-secret-ke"})
        not_bearer = client.post("/api/v1/segment", headers={"Authorization": f"Basic {KEYS[0]}"})
        job = client.get("/api/v1/jobs/abc")
    for response in (missing, wrong, not_bearer, job):
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        body = response.json()
        assert body["success"] is False
        assert body["error"]["code"] == "unauthorized"
        assert body["request_id"] == response.headers["x-request-id"]
    assert missing.json()["request_id"] == "req-1"
    assert "X-API-Key" in missing.json()["error"]["message"]
    assert wrong.json()["error"]["message"] == "the API key is not valid"


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": KEYS[0]},
        {"X-API-Key": KEYS[1]},
        {"Authorization": f"Bearer {KEYS[0]}"},
        {"Authorization": f"bearer  {KEYS[1]} "},
    ],
)
def test_either_header_style_with_any_configured_key_passes(headers: dict[str, str]) -> None:
    with _client() as client:
        response = client.post("/api/v1/segment", headers=headers)
    assert response.status_code == 200
    key = headers.get("X-API-Key") or headers["Authorization"].split()[1]
    # The rate limiter knows the caller by the key's hash, never the key.
    assert response.json()["caller"] == f"key:{key_id(key)}"
    assert key not in response.text


def test_health_ready_metrics_docs_and_the_page_stay_open_by_default() -> None:
    with _client() as client:
        for path in ("/api/v1/health", "/api/v1/ready", "/metrics", "/docs", "/redoc", "/"):
            assert client.get(path).status_code == 200, path
        assert client.get("/openapi.json").status_code == 200
        # A CORS preflight carries no credentials.
        assert client.options("/api/v1/segment").status_code != 401


def test_settings_close_metrics_and_docs() -> None:
    with _client(metrics_require_key=True, docs_require_key=True) as client:
        for path in ("/metrics", "/docs", "/redoc", "/openapi.json"):
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers={"X-API-Key": KEYS[0]}).status_code == 200, path
        assert client.get("/api/v1/health").status_code == 200


def test_keys_never_reach_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="inpaint")
    with _client() as client:
        client.post("/api/v1/segment", headers={"X-API-Key": KEYS[0]})
        client.post("/api/v1/segment", headers={"Authorization": f"Bearer {KEYS[1]}"})
        client.post("/api/v1/segment", headers={"X-API-Key": "a-wrong-secret-key"})
    records = [r for r in caplog.records if r.name == "inpaint.access"]
    assert len(records) == 3
    logged = caplog.text + json.dumps([r.__dict__ for r in records], default=str)
    for key in (*KEYS, "a-wrong-secret-key"):
        assert key not in logged
    assert [r.key_id for r in records] == [key_id(KEYS[0]), key_id(KEYS[1]), None]


def test_api_keys_setting_takes_a_comma_list_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEYS", " one , two,")
    assert Settings(_env_file=None).api_keys == ["one", "two"]
    monkeypatch.setenv("API_KEYS", '["a,b", "c"]')
    assert Settings(_env_file=None).api_keys == ["a,b", "c"]
    monkeypatch.delenv("API_KEYS")
    assert Settings(_env_file=None).api_keys == []

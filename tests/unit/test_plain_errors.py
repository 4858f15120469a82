"""The framework's own 404/405 answers become our JSON error body; everything else passes."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route

from api.errors import error_response
from api.plain_errors import PlainErrorsToJson
from utils.exceptions import NotFoundException

pytestmark = pytest.mark.anyio


async def _ok(_: Request) -> PlainTextResponse:
    return PlainTextResponse("fine")


async def _ours(_: Request) -> JSONResponse:
    return error_response(NotFoundException("no such embedding"), "req-1")


async def _big_page(_: Request) -> PlainTextResponse:
    return PlainTextResponse("x" * 100_000, status_code=404)


@pytest.fixture
def client() -> httpx.AsyncClient:
    mounted = FastAPI()

    @mounted.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    inner = Starlette(
        routes=[
            Route("/api/v1/remove", _ok, methods=["POST"]),
            Route("/ours", _ours),
            Route("/big", _big_page),
            Route("/metrics", _ok),
            Mount("/api/v1", mounted),
        ]
    )
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=PlainErrorsToJson(inner, ["/api/v1/remove"])),
        base_url="http://test",
    )


def _assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"success", "request_id", "timestamp", "error"}
    assert body["success"] is False and body["error"]["code"] == code
    assert response.headers["x-request-id"] == body["request_id"]
    return body


async def test_unknown_path_is_a_json_404(client: httpx.AsyncClient) -> None:
    body = _assert_error(await client.get("/nope"), 404, "not_found")
    assert "/nope" in body["error"]["message"]


async def test_a_mounted_fastapi_404_is_ours_too(client: httpx.AsyncClient) -> None:
    _assert_error(await client.get("/api/v1/nope"), 404, "not_found")


async def test_wrong_method_is_a_json_405_that_keeps_allow(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/remove", headers={"x-request-id": "abc-1"})
    body = _assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"
    assert body["request_id"] == "abc-1"


async def test_our_own_404_and_large_pages_pass_unchanged(client: httpx.AsyncClient) -> None:
    ours = await client.get("/ours")
    assert ours.status_code == 404 and ours.json()["request_id"] == "req-1"
    big = await client.get("/big")
    assert big.status_code == 404 and big.text == "x" * 100_000


async def test_other_answers_pass(client: httpx.AsyncClient) -> None:
    assert (await client.get("/metrics")).text == "fine"
    assert (await client.get("/api/v1/health")).json() == {"status": "ok"}
    assert (await client.post("/api/v1/remove")).text == "fine"

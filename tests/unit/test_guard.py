"""The request guard answers bad uploads with our JSON errors and replays good ones intact."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.guard import RequestGuard

pytestmark = pytest.mark.anyio

LIMIT = 64 * 1024
PATH = "/api/v1/remove"


async def _echo(request: Request) -> JSONResponse:
    """Stands in for BentoML: reports each part as Starlette parses it, with the request id."""
    form = await request.form()
    parts = {}
    for name, value in form.multi_items():
        data = await value.read() if isinstance(value, UploadFile) else value.encode()
        parts[name] = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "filename": getattr(value, "filename", None),
        }
    return JSONResponse(
        {
            "parts": parts,
            "content_type": request.headers["content-type"],
            "request_id": request.headers.get("x-request-id"),
        }
    )


SEGMENT = "/api/v1/segment"


@pytest.fixture
def client() -> httpx.AsyncClient:
    inner = Starlette(
        routes=[
            Route(PATH, _echo, methods=["POST"]),
            Route(SEGMENT, _echo, methods=["POST"]),
            Route("/other", _echo, methods=["POST"]),
        ]
    )
    app = RequestGuard(
        inner, routes={PATH: ("image", "mask"), SEGMENT: ("image",)}, max_file_size=LIMIT
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _assert_error(response: httpx.Response, status: int, code: str, text: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert text in body["error"]["message"]
    assert body["request_id"] and body["timestamp"].endswith("Z")
    assert response.headers["x-request-id"] == body["request_id"]


async def test_valid_form_reaches_the_app_part_for_part(client: httpx.AsyncClient) -> None:
    image, mask = b"\x89PNG-bytes" * 100, b"mask-bytes"
    request_json = json.dumps({"point_coords": [1, 2]})
    response = await client.post(
        PATH,
        files={"image": ("a.png", image, "image/png"), "mask": ("m.png", mask, "image/png")},
        data={"request": request_json},
        headers={"x-request-id": "client-id-42"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["request_id"] == "client-id-42"
    assert body["parts"] == {
        "image": {"sha256": _sha(image), "filename": "image"},
        "mask": {"sha256": _sha(mask), "filename": "mask"},
        "request": {"sha256": _sha(request_json.encode()), "filename": None},
    }


@pytest.mark.parametrize(
    "filename",
    ["x" * 300 + ".png", "a\x00b.png", "../../etc/passwd", "фото.png"],
)
async def test_any_file_name_reaches_the_app_as_the_field_name(
    client: httpx.AsyncClient, filename: str
) -> None:
    response = await client.post(PATH, files={"image": (filename, b"pixels")})
    assert response.status_code == 200, response.text
    assert response.json()["parts"]["image"] == {"sha256": _sha(b"pixels"), "filename": "image"}


async def test_media_type_casing_is_accepted_and_normalised(client: httpx.AsyncClient) -> None:
    request = client.build_request("POST", PATH, files={"image": ("a", b"pixels")})
    boundary = request.headers["content-type"].split("boundary=")[1]
    request.headers["content-type"] = f"Multipart/Form-Data; boundary={boundary}"
    response = await client.send(request)
    assert response.status_code == 200, response.text
    assert response.json()["content_type"].startswith("multipart/form-data; boundary=")
    assert response.json()["parts"]["image"]["sha256"] == _sha(b"pixels")


async def test_a_route_without_mask_refuses_one(client: httpx.AsyncClient) -> None:
    files = {"image": ("a", b"1"), "mask": ("m", b"2")}
    _assert_error(await client.post(SEGMENT, files=files), 422, "validation_error", "mask")
    assert (await client.post(SEGMENT, files={"image": ("a", b"1")})).status_code == 200


@pytest.mark.parametrize("depth", [33, 1_100, 100_000])
async def test_deeply_nested_request_json_is_a_400(client: httpx.AsyncClient, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    response = await client.post(
        PATH, files={"image": ("a", b"1")}, data={"request": '{"box": ' + nested + "}"}
    )
    _assert_error(response, 400, "malformed_request", "nests more than 32 levels")


async def test_request_json_at_the_depth_limit_passes(client: httpx.AsyncClient) -> None:
    nested = "[" * 31 + "]" * 31
    response = await client.post(
        PATH, files={"image": ("a", b"1")}, data={"request": '{"box": ' + nested + "}"}
    )
    assert response.status_code == 200


async def test_a_request_id_is_made_when_the_client_sends_none_or_junk(
    client: httpx.AsyncClient,
) -> None:
    files = {"image": ("a.png", b"x", "image/png")}
    response = await client.post(PATH, files=files, headers={"x-request-id": "bad id!"})
    assert len(response.json()["request_id"]) == 32


@pytest.mark.parametrize(
    ("kwargs", "status", "code", "text"),
    [
        (
            {"json": {"image": "http://169.254.169.254/"}},
            415,
            "unsupported_media_type",
            "multipart",
        ),
        (
            {"data": {"request": "{}"}, "files": {"x": ("a", b"1")}},
            422,
            "validation_error",
            "unknown",
        ),
        (
            {"data": {"request": "{}"}, "files": {"mask": ("a", b"1")}},
            422,
            "validation_error",
            "`image` is required",
        ),
        (
            {"data": {"image": "http://example.com/cat.png"}, "files": {"mask": ("a", b"1")}},
            422,
            "validation_error",
            "uploaded as a file",
        ),
        (
            {"data": {"request": "{bad json"}, "files": {"image": ("a", b"1")}},
            400,
            "malformed_request",
            "not valid JSON",
        ),
        (
            {"files": {"image": ("a", b"1"), "request": ("r.json", b"\xff\xfe\x00")}},
            400,
            "malformed_request",
            "not valid JSON",
        ),
        (
            {"files": [("image", ("a", b"1")), ("image", ("b", b"2"))]},
            422,
            "validation_error",
            "at most one `image`",
        ),
        ({"files": {"image": ("a", b"1" * (LIMIT + 1))}}, 413, "file_too_large", "limit"),
    ],
)
async def test_bad_uploads_get_json_errors(
    client: httpx.AsyncClient, kwargs: dict, status: int, code: str, text: str
) -> None:
    _assert_error(await client.post(PATH, **kwargs), status, code, text)


async def test_body_over_the_limit_is_refused_from_content_length(
    client: httpx.AsyncClient,
) -> None:
    big = b"0" * (3 * LIMIT + 2 * 1024 * 1024)
    response = await client.post(PATH, files={"image": ("a", big)})
    _assert_error(response, 413, "file_too_large", "bytes")


async def test_broken_multipart_is_a_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        PATH, content=b"--x\r\nnonsense", headers={"content-type": "multipart/form-data"}
    )
    _assert_error(response, 400, "malformed_request", "cannot be parsed")


async def test_other_routes_and_methods_pass_through(client: httpx.AsyncClient) -> None:
    assert (await client.post("/other", json={"a": 1})).status_code == 200
    assert (await client.get(PATH)).status_code == 405


async def test_a_stalled_upload_gets_408_and_frees_its_reservation() -> None:
    """A Content-Length larger than what is sent: the body never ends; the deadline does."""

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("a stalled upload must not reach the app")

    guard = RequestGuard(inner, routes={PATH: ("image",)}, max_file_size=LIMIT, read_timeout_s=0.2)
    sent: list[dict[str, Any]] = []
    parts = [{"type": "http.request", "body": b"--x\r\n", "more_body": True}]

    async def receive() -> dict[str, Any]:
        if parts:
            return parts.pop()
        await asyncio.sleep(3600)  # the sender stalls
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": PATH,
        "headers": [
            (b"content-type", b"multipart/form-data; boundary=x"),
            (b"content-length", b"5000"),
        ],
    }
    await guard(scope, receive, send)
    assert sent[0]["status"] == 408
    assert json.loads(sent[1]["body"])["error"]["code"] == "upload_timeout"
    assert guard.receiving == 0


async def test_bytes_being_received_at_once_are_capped() -> None:
    async def inner(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("refused before the app")

    guard = RequestGuard(
        inner, routes={PATH: ("image",)}, max_file_size=LIMIT, receiving_bytes=4096
    )
    guard.receiving = 4000  # other uploads in progress
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": PATH,
        "headers": [
            (b"content-type", b"multipart/form-data; boundary=x"),
            (b"content-length", b"500"),
        ],
    }
    await guard(scope, None, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 503
    assert (b"retry-after", b"5") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["error"]["code"] == "overloaded"
    assert guard.receiving == 4000

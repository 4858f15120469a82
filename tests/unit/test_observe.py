"""Request observation: counters, stage histograms, the request log line and JSON logs;
the runners' queue time and batch size."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from api.errors import error_response
from api.observe import ObserveMiddleware, stage
from runners.queue_metrics import RunnerArrivals, model_work_started
from utils.exceptions import ValidationException
from utils.log_setup import json_handler


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _flow(_: Request) -> JSONResponse:
    with stage("decode"):
        pass
    for _ in range(2):  # a stage that repeats is summed into one sample
        with stage("cache"):
            await asyncio.sleep(0.01)
    return JSONResponse({"success": True})


async def _invalid(_: Request) -> JSONResponse:
    return error_response(ValidationException("no"), "rid-422")


def _client() -> TestClient:
    app = Starlette(
        routes=[
            Route("/api/v1/remove", _flow, methods=["POST"]),
            Route("/api/v1/fill", _invalid, methods=["POST"]),
        ]
    )
    return TestClient(ObserveMiddleware(app, routes=["remove", "fill"]))


def test_a_request_is_counted_once_with_one_sample_per_stage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="inpaint.access")
    counted = {"route": "remove", "status": "200"}
    before = {
        "requests": _value("inpaint_requests_total", **counted),
        "decode": _value("inpaint_stage_duration_seconds_count", route="remove", stage="decode"),
        "cache": _value("inpaint_stage_duration_seconds_count", route="remove", stage="cache"),
        "cache_s": _value("inpaint_stage_duration_seconds_sum", route="remove", stage="cache"),
    }
    with _client() as client:
        response = client.post("/api/v1/remove", headers={"X-Request-ID": "rid-200"})
    assert response.status_code == 200
    assert _value("inpaint_requests_total", **counted) == before["requests"] + 1
    assert (
        _value("inpaint_stage_duration_seconds_count", route="remove", stage="decode")
        == before["decode"] + 1
    )
    assert (
        _value("inpaint_stage_duration_seconds_count", route="remove", stage="cache")
        == before["cache"] + 1
    )
    cache_s = _value("inpaint_stage_duration_seconds_sum", route="remove", stage="cache")
    assert cache_s - before["cache_s"] >= 0.02
    (record,) = [r for r in caplog.records if r.name == "inpaint.access"]
    assert (record.request_id, record.route, record.status) == ("rid-200", "remove", 200)
    assert record.error_code is None
    assert set(record.stages_ms) == {"decode", "cache"}


def test_errors_are_logged_with_their_code_and_unknown_routes_count_as_other(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="inpaint.access")
    other_before = _value("inpaint_requests_total", route="other", status="404")
    with _client() as client:
        assert client.post("/api/v1/fill").status_code == 422
        assert client.get("/api/v1/no-such-route-123").status_code == 404
    assert _value("inpaint_requests_total", route="other", status="404") == other_before + 1
    invalid, missing = [r for r in caplog.records if r.name == "inpaint.access"]
    assert (invalid.request_id, invalid.status, invalid.error_code) == (
        "rid-422",
        422,
        "validation_error",
    )
    assert "422 validation_error" in invalid.getMessage()
    assert (missing.route, missing.error_code) == ("other", None)  # not our error shape


def test_json_log_lines_carry_the_request_fields() -> None:
    handler = json_handler()
    stream = io.StringIO()
    handler.setStream(stream)
    record = logging.LogRecord("inpaint.access", logging.INFO, __file__, 1, "%s", ("x",), None)
    record.__dict__.update({"request_id": "r1", "status": 429, "stages_ms": {"decode": 1.5}})
    handler.emit(record)
    line = json.loads(stream.getvalue())
    assert line["message"] == "x"
    assert line["level"] == "INFO"
    assert line["logger"] == "inpaint.access"
    assert (line["request_id"], line["status"], line["stages_ms"]) == ("r1", 429, {"decode": 1.5})
    assert line["time"].endswith("+00:00")


def test_runner_queue_time_is_the_wait_before_the_model_work() -> None:
    async def work(request: Request) -> JSONResponse:
        await asyncio.sleep(0.05)  # waiting for the model
        model_work_started("unit", "work", 1)
        return JSONResponse({})

    app = RunnerArrivals(Starlette(routes=[Route("/work", work, methods=["POST"])]))
    labels = {"runner": "unit", "method": "work"}
    count_before = _value("inpaint_runner_queue_seconds_count", **labels)
    sum_before = _value("inpaint_runner_queue_seconds_sum", **labels)
    with TestClient(app) as client:
        assert client.post("/work").status_code == 200
        assert client.get("/work").status_code == 405  # not a model call: not tracked
    assert _value("inpaint_runner_queue_seconds_count", **labels) == count_before + 1
    assert _value("inpaint_runner_queue_seconds_sum", **labels) - sum_before >= 0.05
    assert _value("inpaint_runner_batch_size_count", **labels) >= 1


def test_a_batch_takes_the_oldest_waiting_calls() -> None:
    async def run() -> None:
        release = asyncio.Event()

        async def waiting_app(scope: dict, receive: object, send: object) -> None:
            await release.wait()

        app = RunnerArrivals(waiting_app)
        scope = {"type": "http", "method": "POST", "path": "/batch"}
        calls = [asyncio.create_task(app(scope, None, None)) for _ in range(3)]
        await asyncio.sleep(0.01)
        labels = {"runner": "unit", "method": "batch"}
        before = _value("inpaint_runner_queue_seconds_count", **labels)
        model_work_started("unit", "batch", 2)
        assert _value("inpaint_runner_queue_seconds_count", **labels) == before + 2
        assert _value("inpaint_runner_batch_size_sum", **labels) >= 2
        release.set()
        await asyncio.gather(*calls)  # the third call ended unserved: forgotten
        model_work_started("unit", "batch", 1)
        assert _value("inpaint_runner_queue_seconds_count", **labels) == before + 2

    asyncio.run(run())

"""Fill and replace as jobs through a real server: progress, result, cancel, errors.

The tiny SD model runs a step in a few tens of milliseconds, so the jobs use many steps and
the status is polled often enough to see them (bounded loops; no timing is asserted).
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Server
from tests.e2e.helpers import assert_error, example_cases, example_path, post

pytestmark = pytest.mark.e2e
CASES = example_cases()
DOG = CASES["remove-dog"]
FILL = {
    "point_coords": [[400, 300]],
    "text_prompt": "a wooden bench",
    "num_inference_steps": 40,
    "seed": 1234,
}
STATUS_KEYS = {
    "success",
    "job_id",
    "route",
    "state",
    "progress",
    "step",
    "total_steps",
    "eta_s",
    "error",
    "created_at",
    "updated_at",
}
POLL_S = 0.03
DEADLINE_S = 180


@pytest.fixture(scope="module")
def client(server: Server) -> httpx.Client:
    with server.client() as client:
        yield client


def _submit(client: httpx.Client, route: str, request: dict[str, Any]) -> dict[str, Any]:
    response = post(client, f"jobs/{route}", example_path(DOG), request)
    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == {
        "success",
        "request_id",
        "timestamp",
        "job_id",
        "state",
        "status_url",
        "result_url",
    }
    assert body["success"] is True and body["state"] == "queued"
    assert body["status_url"] == f"/api/v1/jobs/{body['job_id']}"
    assert body["result_url"] == f"/api/v1/jobs/{body['job_id']}/result"
    return body


def _status(client: httpx.Client, job: dict[str, Any]) -> dict[str, Any]:
    response = client.get(job["status_url"])
    assert response.status_code == 200, response.text
    status = response.json()
    assert set(status) == STATUS_KEYS and status["job_id"] == job["job_id"]
    return status


def _poll(client: httpx.Client, job: dict[str, Any], until) -> list[dict[str, Any]]:
    """Statuses until `until(status)` holds (bounded by DEADLINE_S)."""
    seen = []
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        seen.append(_status(client, job))
        if until(seen[-1]):
            return seen
        time.sleep(POLL_S)
    pytest.fail(f"job did not get there in {DEADLINE_S} s: {seen[-3:]}")


def _without_timing(body: dict[str, Any]) -> dict[str, Any]:
    metadata = {k: v for k, v in body["metadata"].items() if k != "processing_time_ms"}
    return {**body, "request_id": None, "timestamp": None, "metadata": metadata}


@pytest.mark.parametrize("route", ["fill", "replace"])
def test_job_reports_progress_and_gives_the_sync_result(client: httpx.Client, route: str) -> None:
    job = _submit(client, route, FILL)
    early = client.get(job["result_url"])
    if early.status_code != 200:  # the tiny model may already be done
        assert_error(early, 409, "job_not_done")
    seen = _poll(client, job, lambda s: s["state"] in ("done", "failed", "cancelled"))
    final = seen[-1]
    assert final["state"] == "done", final
    assert final["progress"] == 1.0 and final["step"] == final["total_steps"] == 40
    assert final["error"] is None and final["route"] == route
    painting = [s for s in seen if s["state"] == "running" and 1 <= s["step"] < 40]
    assert painting, f"no poll saw the job between steps: {seen}"
    assert all(0 < s["progress"] < 1 and s["eta_s"] is not None for s in painting)
    steps = [s["step"] for s in seen]
    assert steps == sorted(steps), "progress never goes back"

    result = client.get(job["result_url"])
    assert result.status_code == 200, result.text
    assert result.json()["request_id"] == job["request_id"]
    sync = post(client, route, example_path(DOG), FILL)
    assert sync.status_code == 200, sync.text
    assert set(result.json()) == set(sync.json())
    assert _without_timing(result.json()) == _without_timing(sync.json())


def test_cancel_stops_the_running_job(client: httpx.Client) -> None:
    job = _submit(client, "fill", {**FILL, "num_inference_steps": 100})
    _poll(client, job, lambda s: s["step"] >= 2)
    response = client.delete(job["status_url"])
    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert set(cancelled) == STATUS_KEYS and cancelled["state"] == "cancelled"
    # The runner stops at its next step: the step count settles below the total.
    settled = None
    for _ in range(40):
        before = _status(client, job)
        time.sleep(0.5)
        after = _status(client, job)
        if before["step"] == after["step"]:
            settled = after
            break
    assert settled is not None, "the SD runner kept painting a cancelled job"
    assert settled["state"] == "cancelled" and settled["step"] < 100, settled
    assert_error(client.get(job["result_url"]), 410, "job_cancelled")
    # Cancelling again changes nothing.
    assert client.delete(job["status_url"]).json()["state"] == "cancelled"


def test_a_cancelled_queued_job_never_starts(client: httpx.Client) -> None:
    first = _submit(client, "fill", {**FILL, "num_inference_steps": 100})
    second = _submit(client, "fill", FILL)
    _poll(client, first, lambda s: s["state"] == "running")
    assert _status(client, second)["state"] == "queued"  # JOB_MAX_RUNNING=1
    assert client.delete(second["status_url"]).json()["state"] == "cancelled"
    assert client.delete(first["status_url"]).json()["state"] == "cancelled"
    time.sleep(1.0)
    never = _status(client, second)
    assert never["state"] == "cancelled" and never["step"] == 0


def test_unknown_job_is_404_in_our_shape(client: httpx.Client) -> None:
    for response in (
        client.get("/api/v1/jobs/no-such-job"),
        client.get("/api/v1/jobs/no-such-job/result"),
        client.delete("/api/v1/jobs/no-such-job"),
    ):
        assert_error(response, 404, "job_not_found")


def test_bad_job_input_is_refused_before_a_job_exists(client: httpx.Client) -> None:
    photo = example_path(DOG)
    assert_error(post(client, "jobs/fill", b"not an image", FILL), 400, "invalid_image")
    no_prompt = {k: v for k, v in FILL.items() if k != "point_coords"}
    assert_error(post(client, "jobs/fill", photo, no_prompt), 422, "validation_error")
    outside = {**FILL, "point_coords": [[5000, 10]]}
    assert_error(post(client, "jobs/replace", photo, outside), 422, "validation_error")
    assert_error(
        post(client, "jobs/fill", photo, {**FILL, "text_prompt": ""}), 422, "validation_error"
    )
    response = client.post(
        "/api/v1/jobs/fill",
        files={"image": ("a.png", photo.read_bytes())},
        data={"request": "{not json"},
    )
    assert_error(response, 400, "malformed_request")


def test_openapi_documents_the_jobs_api(server: Server) -> None:
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    for route in ("fill", "replace", "remove"):
        responses = paths[f"/api/v1/jobs/{route}"]["post"]["responses"]
        assert "202" in responses and "200" not in responses and "422" in responses
        assert "429" in responses and "409" in responses
    status = paths["/api/v1/jobs/{job_id}"]
    assert {"get", "delete"} <= set(status) and "404" in status["get"]["responses"]
    result = paths["/api/v1/jobs/{job_id}/result"]["get"]["responses"]
    assert {"200", "404", "409", "410"} <= set(result)


def test_cors_allows_delete(server: Server) -> None:
    preflight = httpx.options(
        f"{server.url}/api/v1/jobs/x",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "DELETE"},
    )
    assert preflight.status_code == 200
    assert "DELETE" in preflight.headers["access-control-allow-methods"]


def test_json_of_the_request_part_is_echoed_nowhere(client: httpx.Client) -> None:
    """A submitted job's status never carries the request (prompts stay private)."""
    job = _submit(client, "fill", {**FILL, "num_inference_steps": 2})
    status = _poll(client, job, lambda s: s["state"] == "done")[-1]
    assert "wooden bench" not in json.dumps(status)

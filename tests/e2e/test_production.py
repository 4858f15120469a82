"""Production settings through two real `bentoml serve` processes sharing one real Redis:
API keys, the shared rate limit, /metrics beside BentoML's own, and JSON request logs.

Server A closes /metrics and the docs (METRICS_REQUIRE_KEY, DOCS_REQUIRE_KEY); server B keeps
the defaults. Each test uses its own key, so that each has its own bucket.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bentoml
import httpx
import numpy as np
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from scripts.local_server import LocalServer, serving
from tests.e2e.conftest import SERVER_ENV
from tests.e2e.helpers import (
    assert_error,
    cleared_redis,
    example_cases,
    example_path,
    load_rgb,
    png_bytes,
)

pytestmark = pytest.mark.e2e

KEYS = {
    name: f"{name}-{uuid.uuid4().hex}" for name in ("auth", "client", "rate", "pooled", "metrics")
}
RATE_KEYS = "inpaint:rate:*"
DOG = example_cases()["remove-dog"]
CLICK = {"point_coords": DOG["point_coords"], "point_labels": DOG["point_labels"]}


@dataclass(frozen=True)
class Pair:
    a: LocalServer  # METRICS_REQUIRE_KEY and DOCS_REQUIRE_KEY
    b: LocalServer  # defaults


@pytest.fixture(scope="module")
def store(redis_url: str) -> Iterator[redis.Redis]:
    with cleared_redis(redis_url, RATE_KEYS) as client:
        yield client


@pytest.fixture(scope="module")
def servers(
    store: redis.Redis,
    redis_url: str,
    bentoml_home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pair]:
    settings = {
        **SERVER_ENV,
        "REDIS_URL": redis_url,
        "API_KEYS": ",".join(KEYS.values()),
        "RATE_LIMIT_CAPACITY": "4",
        "RATE_LIMIT_REFILL_PER_S": "0.5",
        "RATE_LIMIT_COSTS": '{"fill": 3, "replace": 3}',
        "LOG_FORMAT": "json",
    }
    closed = {"METRICS_REQUIRE_KEY": "true", "DOCS_REQUIRE_KEY": "true"}
    logs = tmp_path_factory.mktemp("production")
    # `bentoml serve` empties BENTOML_HOME/prometheus_multiproc_dir when it starts: two
    # servers on one host need a home each, or the second wipes the first one's metrics.
    home_b = tmp_path_factory.mktemp("bentoml-home-b")
    shutil.copytree(bentoml_home / "models", home_b / "models")
    with (
        serving(bentoml_home, logs / "a.log", {**settings, **closed}) as a,
        serving(home_b, logs / "b.log", settings) as b,
    ):
        yield Pair(a, b)


def _photo() -> bytes:
    """The dog photo with one pixel no other request sent: a sure embedding-cache miss."""
    photo = load_rgb(example_path(DOG)).copy()
    photo[0, 0] = np.frombuffer(uuid.uuid4().bytes[:3], np.uint8)
    return png_bytes(photo)


def _post(
    server: LocalServer,
    route: str,
    key: str | None = None,
    image: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """With an image: a real request (the dog, its click); without: a JSON body, which the
    request guard refuses (415) after the key and the rate limit let it through."""
    sent = dict(headers or {})
    if key is not None:
        sent["X-API-Key"] = key
    with httpx.Client(base_url=server.url, timeout=120) as client:
        if image is None:
            return client.post(f"/api/v1/{route}", json={}, headers=sent)
        files = {"image": ("dog.png", image, "image/png")}
        data = {"request": json.dumps(CLICK)}
        return client.post(f"/api/v1/{route}", files=files, data=data, headers=sent)


def test_keys_guard_the_api_and_leave_health_open(servers: Pair) -> None:
    missing = _post(servers.a, "segment")
    assert_error(missing, 401, "unauthorized", "X-API-Key")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert_error(_post(servers.a, "remove", "not-a-key"), 401, "unauthorized", "not valid")
    photo = _photo()
    assert _post(servers.a, "segment", KEYS["auth"], photo).status_code == 200
    bearer = {"Authorization": f"Bearer {KEYS['auth']}"}
    assert _post(servers.b, "segment", None, photo, bearer).status_code == 200
    with httpx.Client(base_url=servers.a.url, timeout=30) as a:
        assert a.get("/api/v1/health").status_code == 200
        assert a.get("/api/v1/ready").status_code == 200
        assert_error(a.get("/metrics"), 401, "unauthorized")
        assert a.get("/metrics", headers={"X-API-Key": KEYS["auth"]}).status_code == 200
        assert_error(a.get("/docs"), 401, "unauthorized")
        assert a.get("/openapi.json", headers=bearer).status_code == 200
    with httpx.Client(base_url=servers.b.url, timeout=30) as b:
        for path in ("/metrics", "/docs", "/openapi.json", "/"):
            assert b.get(path).status_code == 200, path
    # The BentoML client sends its `token` as a Bearer key.
    with bentoml.SyncHTTPClient(servers.a.url, token=KEYS["client"], timeout=120) as client:
        segmented = client.segment(image=example_path(DOG), request=CLICK)
    assert segmented["success"] is True and len(segmented["masks"]) == 3


def test_a_key_is_limited_when_its_bucket_is_empty_and_passes_once_it_refills(
    servers: Pair,
) -> None:
    key = KEYS["rate"]
    for _ in range(4):  # capacity 4, a route costs 1
        assert _post(servers.a, "segment", key).status_code == 415
    limited = _post(servers.a, "segment", key)
    assert_error(limited, 429, "rate_limited", "retry in")
    retry_after = int(limited.headers["retry-after"])
    assert 1 <= retry_after <= 2  # 1 token at 0.5 per second
    fill = _post(servers.a, "fill", key)  # costs 3
    assert_error(fill, 429, "rate_limited", "costs 3")
    assert int(fill.headers["retry-after"]) > retry_after
    time.sleep(retry_after)
    assert _post(servers.a, "segment", key, _photo()).status_code == 200


def test_two_servers_sharing_redis_enforce_one_limit(store: redis.Redis, servers: Pair) -> None:
    key = KEYS["pooled"]
    for server in (servers.a, servers.b, servers.a, servers.b):
        assert _post(server, "segment", key).status_code == 415
    # Each server saw two requests of four allowed; together they spent the bucket.
    assert_error(_post(servers.a, "segment", key), 429, "rate_limited")
    assert_error(_post(servers.b, "segment", key), 429, "rate_limited")
    buckets = [k.decode() for k in store.keys(RATE_KEYS)]
    assert buckets and all(key not in bucket for bucket in buckets)


def _scrape(server: LocalServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{server.url}/metrics", headers={"X-API-Key": KEYS["metrics"]})
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_metrics_move_by_what_the_requests_did(servers: Pair) -> None:
    before = _scrape(servers.a)
    photo = _photo()
    remove = _post(servers.a, "remove", KEYS["metrics"], photo)
    assert remove.status_code == 200, remove.text
    segment = _post(servers.a, "segment", KEYS["metrics"], photo)
    assert segment.json()["metadata"]["embedding_cached"] is True
    assert _post(servers.a, "segment").status_code == 401
    after = _scrape(servers.a)

    def delta(name: str, **labels: str) -> float:
        return _delta(before, after, name, **labels)

    assert delta("inpaint_requests_total", route="remove", status="200") == 1
    assert delta("inpaint_requests_total", route="segment", status="200") == 1
    assert delta("inpaint_requests_total", route="segment", status="401") == 1
    stages = "inpaint_stage_duration_seconds_count"
    for stage in ("decode", "cache", "embed", "mask", "inpaint", "composite", "encode"):
        assert delta(stages, route="remove", stage=stage) == 1, stage
    for stage in ("decode", "mask", "encode"):
        assert delta(stages, route="segment", stage=stage) == 1, stage
    # The SAM runner still held the embedding: neither the cache nor the encoder was asked.
    assert delta(stages, route="segment", stage="cache") == 0
    assert delta(stages, route="segment", stage="embed") == 0
    assert delta("inpaint_embedding_cache_total", result="miss") == 1
    assert delta("inpaint_embedding_cache_total", result="hit") == 1
    # The runners' own processes report on the same endpoint.
    queue = "inpaint_runner_queue_seconds_count"
    assert delta(queue, runner="sam", method="embed") == 1
    assert delta(queue, runner="sam", method="decode") == 2
    assert delta(queue, runner="lama", method="inpaint") == 1
    assert delta("inpaint_runner_batch_size_sum", runner="lama", method="inpaint") == 1
    # ... beside BentoML's own metrics (those that deploy/grafana's dashboard shows).
    names = {name for name, _ in after}
    assert {"bentoml_service_request_duration_seconds_bucket"} <= names
    assert {"bentoml_service_request_in_progress"} <= names


def _json_lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def _request_lines(log: Path, request_ids: set[str]) -> dict[str, dict[str, Any]]:
    """The request log lines by request id, once all of `request_ids` are there: the serving
    processes' output reaches the log file through BentoML's process manager, which may relay
    it a moment after the response."""
    deadline = time.monotonic() + 15
    while True:
        lines = {
            line["request_id"]: line for line in _json_lines(log) if line.get("event") == "request"
        }
        if request_ids <= set(lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.2)


def test_json_logs_have_one_line_per_request_and_no_key(servers: Pair) -> None:
    assert _post(servers.a, "segment", headers={"X-Request-ID": "prod-log-401"}).status_code == 401
    ok = _post(servers.a, "segment", KEYS["auth"], _photo(), {"X-Request-ID": "prod-log-200"})
    assert ok.status_code == 200
    lines = _request_lines(servers.a.log, {"prod-log-401", "prod-log-200"})
    denied, served = lines["prod-log-401"], lines["prod-log-200"]
    assert (denied["route"], denied["status"], denied["error_code"]) == (
        "segment",
        401,
        "unauthorized",
    )
    assert denied["key_id"] is None
    assert (served["route"], served["status"], served["error_code"]) == ("segment", 200, None)
    assert set(served["stages_ms"]) >= {"decode", "mask", "encode"}
    assert served["key_id"] and served["level"] == "INFO"
    for log in (servers.a.log, servers.b.log):
        text = log.read_text()
        for key in KEYS.values():
            assert key not in text

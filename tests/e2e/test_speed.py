"""/ready says which backend each runner picked, on how many threads, and that it warmed up."""

from __future__ import annotations

import httpx
import pytest

from models.backends import cpu_report
from tests.e2e.conftest import SERVER_ENV, Server
from tests.host_cpu import cpu_flags, expected_precision

pytestmark = pytest.mark.e2e


def test_ready_reports_backends_threads_and_warm_up(server: Server) -> None:
    models = httpx.get(f"{server.url}/api/v1/ready", timeout=30).json()["models"]
    host = cpu_report()
    precision = expected_precision()  # from /proc/cpuinfo, not from the code under test
    for kind, network in (("sam", "encoder"), ("lama", "generator")):
        details = models[kind]["details"]
        assert details[network]["backend"] == "openvino", details
        assert details[network]["precision"] == precision
        assert details["host"] == host
        assert set(details["host"]["features"]) <= cpu_flags()
        assert details["warm_up_s"] > 0  # a whole forward, at least 10 ms on any CPU
    for kind in ("sam", "lama", "sd"):
        details = models[kind]["details"]
        # The test server pins TORCH_THREADS; the default (every core) is checked in
        # tests/service/test_fast_paths.py.
        assert details["torch_threads"] == int(SERVER_ENV["TORCH_THREADS"])
        assert "warm_up_s" in details  # that the warm-up spares the first request: see
        # tests/service/test_fast_paths.py

"""/ready says which backend each runner picked, on how many threads, and that it warmed up."""

from __future__ import annotations

import httpx
import pytest

from models.backends import cpu_report, host_has_bf16
from tests.e2e.conftest import SERVER_ENV, Server

pytestmark = pytest.mark.e2e


def test_ready_reports_backends_threads_and_warm_up(server: Server) -> None:
    models = httpx.get(f"{server.url}/api/v1/ready", timeout=30).json()["models"]
    host = cpu_report()
    precision = "bf16" if host_has_bf16() else "fp32"
    for kind, network in (("sam", "encoder"), ("lama", "generator")):
        details = models[kind]["details"]
        assert details[network]["backend"] == "openvino", details
        assert details[network]["precision"] == precision
        assert details["host"] == host
    for kind in ("sam", "lama", "sd"):
        details = models[kind]["details"]
        # The test server pins TORCH_THREADS; the default (every core) is checked in
        # tests/service/test_fast_paths.py.
        assert details["torch_threads"] == int(SERVER_ENV["TORCH_THREADS"])
        assert details["warm_up_s"] >= 0

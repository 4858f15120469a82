"""/ready's verdict from the runners' status reports (flows.readiness), SAM 3 optional."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from config.settings import Settings
from flows.context import Runners
from flows.readiness import Readiness


def _runner(**report: Any) -> SimpleNamespace:
    status = {"loaded": True, "tag": "m:1", "device": "cpu", "demo": False, **report}

    async def answer() -> dict[str, Any]:
        return status

    return SimpleNamespace(to_async=SimpleNamespace(status=answer))


def _report(settings: Settings, **sam3: Any):
    ok = _runner()
    runners = Runners(sam=ok, lama=ok, sd=ok, sd_monitor=ok, sam3=_runner(**sam3))
    return asyncio.run(Readiness(runners, settings).report())


def test_a_missing_sam3_is_a_notice_unless_required() -> None:
    missing = {"loaded": False, "error": "no sam3 model in the store"}
    report = _report(Settings(), **missing)
    assert report.ready is True and report.problems == []
    assert report.notices == ["sam3: no sam3 model in the store"]
    required = _report(Settings(sam3_required=True), **missing)
    assert required.ready is False
    assert required.problems == ["sam3: no sam3 model in the store"] and required.notices == []


def test_a_demo_sam3_in_production_is_a_notice_a_demo_sam_a_problem() -> None:
    production = Settings(environment="production", api_keys=["k"])
    report = _report(production, demo=True)
    assert report.ready is True
    assert report.notices == ["ENVIRONMENT=production but sam3 serves a demo model"]
    assert _report(Settings(), demo=True).notices == []  # development: demo models are fine

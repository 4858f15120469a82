"""Readiness: every runner's load state, and what a runner's failure means to a client."""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from api.schemas import ModelReadiness, ReadyResponse
from config.settings import Settings
from flows.capacity import server_capacity
from flows.context import Runners
from runners.client import call_runner
from runners.runtime import process_memory_mb
from utils.exceptions import InpaintError, ModelNotLoadedException, OverloadedException

logger = logging.getLogger("inpaint.readiness")

KINDS = ("sam", "lama", "sd", "sam3")
_ASK_TIMEOUT_S = 10


class Readiness:
    def __init__(self, runners: Runners, settings: Settings) -> None:
        self._runners = runners
        self._settings = settings

    async def report(self) -> ReadyResponse:
        """Every runner's load state; a runner that does not answer counts as not loaded."""
        reports = dict(zip(KINDS, await asyncio.gather(*map(self._ask, KINDS)), strict=True))
        optional = set() if self._settings.sam3_required else {"sam3"}
        found: dict[str, list[str]] = {kind: [] for kind in KINDS}
        for kind, report in reports.items():
            if not report.loaded:
                found[kind].append(f"{kind}: {report.error or 'not loaded'}")
            elif report.demo and self._settings.is_production:
                found[kind].append(f"ENVIRONMENT=production but {kind} serves a demo model")
        problems = [p for kind in KINDS if kind not in optional for p in found[kind]]
        notices = [p for kind in KINDS if kind in optional for p in found[kind]]
        demo = [kind for kind, report in reports.items() if report.demo]
        return ReadyResponse(
            ready=not problems,
            problems=problems,
            notices=notices,
            demo_models=bool(demo),
            models=reports,
            process_memory_mb=process_memory_mb(),
            capacity=server_capacity(self._settings),
        )

    async def _ask(self, kind: str) -> ModelReadiness:
        try:
            async with asyncio.timeout(_ASK_TIMEOUT_S):
                status = await call_runner(self._runners.of(kind).to_async.status)
            return ModelReadiness.model_validate(status)
        except Exception as exc:
            return ModelReadiness(loaded=False, tag="unknown", error=f"no answer: {exc!r}")

    async def runner_failure(self, exc: Exception) -> InpaintError:
        """A runner's failure as the client sees it. BentoML answers 503 both for a runner
        whose model is not loaded and for one shedding load, and a runner that does not
        answer at all may be down or saturated: readiness tells these apart."""
        unreachable = isinstance(exc, aiohttp.ClientConnectionError)
        if not unreachable and int(getattr(exc, "error_code", 500)) != 503:
            logger.error("runner call failed: %r", exc)
            return InpaintError("a model runner failed; see the server log")
        readiness = await self.report()
        if readiness.ready:
            return OverloadedException("the model runners are at capacity; retry shortly")
        return ModelNotLoadedException("; ".join(readiness.problems))

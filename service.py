"""Inpaint Anything as a BentoML service: the routes, their dependencies and lifecycle.

What each route does is its flow's (flows/: segment, remove, fill, replace, embedding); how a
request is admitted, timed and cancelled is flows.admission's; readiness is flows.readiness's.
This module wires them to HTTP and to the model runners.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import bentoml
from bentoml.exceptions import BentoMLException
from pydantic import BaseModel
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse

from api.app import create_docs_app, create_health_app, document_routes
from api.decoder import DecoderFiles, decoder_router
from api.embedding import BINARY_HEADERS, EmbeddingResponse, wants_binary
from api.errors import REQUEST_ID_HEADER, request_id_from
from api.guard import RequestGuard
from api.parts import (
    FillRequestPart,
    MaskParts,
    RemoveRequestPart,
    ReplaceRequestPart,
    SegmentRequestPart,
)
from api.plain_errors import PlainErrorsToJson
from api.production import add_production_middleware
from api.schemas import InpaintResponse, ReadyResponse, SegmentResponse
from config.settings import get_settings
from flows.admission import Admission, ClientGoneException, stamped, unless_disconnected
from flows.context import Background, FlowContext, RunnerFacts, Runners, begin_request
from flows.jobs import execute_job, submit_job
from flows.readiness import Readiness
from flows.registry import API_PREFIX, FLOWS, JOB_FLOWS, guarded_routes, prepare
from flows.sam3_client import Sam3Client
from flows.sam_client import SamClient
from flows.upload import read_files
from jobs.http import document_job_submits, job_router
from jobs.model import JobAccepted
from jobs.setup import make_jobs
from runners.client import call_runner
from runners.embedding_cache import make_embedding_cache
from runners.lama import LamaRunner
from runners.sam import SamRunner
from runners.sam3 import Sam3Runner
from runners.sd import SdRunner
from utils.decoded_uploads import DecodedUploads
from utils.log_setup import configure_logging

settings = get_settings()

health_app = create_health_app(bentoml.get_current_service)
health_app.include_router(decoder_router(bentoml.get_current_service))
health_app.include_router(job_router(lambda: bentoml.get_current_service().jobs))
POST_ROUTES = [flow.path for flow in FLOWS.values()] + [flow.job_path for flow in JOB_FLOWS]


@bentoml.asgi_app(
    create_docs_app(
        lambda: document_job_submits(
            document_routes(InpaintAnything.openapi_spec.asdict(), POST_ROUTES),
            [flow.job_path for flow in JOB_FLOWS],
        )
    ),
    path="/",
)
@bentoml.asgi_app(health_app, path=API_PREFIX)
@bentoml.service(name="inpaint_anything", traffic={"timeout": settings.processing_timeout_s + 30})
class InpaintAnything:
    """Click an object in a photo; segment it, remove it, fill it or replace its surroundings."""

    sam = bentoml.depends(SamRunner)
    lama = bentoml.depends(LamaRunner)
    sd = bentoml.depends(SdRunner)
    sd_monitor = bentoml.depends(SdRunner)  # job polls and cancels: see flows.context.Runners
    sam3 = bentoml.depends(Sam3Runner)  # `text` selections

    def __init__(self) -> None:
        configure_logging(settings.log_level)
        runners = Runners(self.sam, self.lama, self.sd, self.sd_monitor, self.sam3)
        facts = RunnerFacts(runners)
        background = Background()
        cache = make_embedding_cache(settings)
        self.flows = FlowContext(
            settings=settings,
            runners=runners,
            facts=facts,
            sam=SamClient(self.sam, facts, cache, background, settings),
            decoded=DecodedUploads(settings.decoded_uploads_mb * 1024 * 1024),
            background=background,
            sam3=Sam3Client(self.sam3, facts, background, settings),
        )
        self._readiness = Readiness(runners, settings)
        self.admission = Admission(settings, self._readiness.runner_failure)
        self.decoders = DecoderFiles(self._export_decoder)
        self.jobs = make_jobs(
            settings,
            progress=self._job_progress,
            cancel=lambda job_id: call_runner(self.sd_monitor.to_async.cancel, job_id=job_id),
        )

    # --- the four routes and the editor's embedding ----------------------------------------

    @bentoml.api(route=FLOWS["segment"].path)
    async def segment(
        self, ctx: bentoml.Context, image: Path, request: SegmentRequestPart = None
    ) -> SegmentResponse:
        """SAM's three candidate masks for the prompt, with their scores."""
        return await self._respond(ctx, "segment", image, request)

    @bentoml.api(route=FLOWS["remove"].path)
    async def remove(
        self,
        ctx: bentoml.Context,
        image: Path,
        request: RemoveRequestPart = None,
        mask: MaskParts = (),
    ) -> InpaintResponse:
        """Remove the clicked object: SAM mask, dilated, inpainted by LaMa."""
        return await self._respond(ctx, "remove", image, request, mask)

    @bentoml.api(route=FLOWS["fill"].path)
    async def fill(
        self,
        ctx: bentoml.Context,
        image: Path,
        request: FillRequestPart = None,
        mask: MaskParts = (),
    ) -> InpaintResponse:
        """Fill the clicked object's region with what `text_prompt` describes (SD)."""
        return await self._respond(ctx, "fill", image, request, mask)

    @bentoml.api(route=FLOWS["replace"].path)
    async def replace(
        self,
        ctx: bentoml.Context,
        image: Path,
        request: ReplaceRequestPart = None,
        mask: MaskParts = (),
    ) -> InpaintResponse:
        """Keep the clicked object and regenerate everything around it from `text_prompt`."""
        return await self._respond(ctx, "replace", image, request, mask)

    @bentoml.api(route=FLOWS["embedding"].path)
    async def embedding(self, ctx: bentoml.Context, image: Path) -> EmbeddingResponse:
        """The photo's SAM image embedding, from the cache the routes share, for running
        SAM's decoder (`/api/v1/sam-decoder.onnx`) in the browser. With `Accept:
        application/octet-stream`, the raw float32 bytes with their shape in headers."""
        form = "binary" if wants_binary(ctx.request.headers.get("accept", "")) else "json"
        return await self._respond(ctx, "embedding", image, {"form": form})

    # --- jobs -------------------------------------------------------------------------------

    @bentoml.api(route=FLOWS["remove"].job_path)
    async def submit_remove(
        self,
        ctx: bentoml.Context,
        image: Path,
        request: RemoveRequestPart = None,
        mask: MaskParts = (),
    ) -> JobAccepted:
        """`/remove` as a job: answers 202 at once; follow `status_url`, fetch `result_url`."""
        return await self._submit(ctx, "remove", image, request, mask)

    @bentoml.api(route=FLOWS["fill"].job_path)
    async def submit_fill(
        self,
        ctx: bentoml.Context,
        image: Path,
        request: FillRequestPart = None,
        mask: MaskParts = (),
    ) -> JobAccepted:
        """`/fill` as a job: answers 202 at once; follow `status_url`, fetch `result_url`."""
        return await self._submit(ctx, "fill", image, request, mask)

    @bentoml.api(route=FLOWS["replace"].job_path)
    async def submit_replace(
        self,
        ctx: bentoml.Context,
        image: Path,
        request: ReplaceRequestPart = None,
        mask: MaskParts = (),
    ) -> JobAccepted:
        """`/replace` as a job: answers 202 at once; follow `status_url`, fetch `result_url`."""
        return await self._submit(ctx, "replace", image, request, mask)

    # --- what the routes share --------------------------------------------------------------

    async def _respond(
        self, ctx: bentoml.Context, name: str, image: Path, raw: Any, masks: Sequence[Path] = ()
    ) -> BaseModel | JSONResponse:
        request_id = self._request_id(ctx)
        started = time.perf_counter()
        begin_request(request_id, settings.processing_timeout_s)
        flow = FLOWS[name]

        async def work() -> BaseModel:
            parts = await read_files(image, masks)
            request, upload = await prepare(self.flows, flow, raw, *parts)
            return await flow.run(self.flows, request, upload)

        try:
            attempt = self.admission.attempt(name, request_id, work, admit=True)
            outcome = await unless_disconnected(ctx.request, attempt)
        except ClientGoneException as exc:
            outcome = exc
        return self.admission.reply(ctx, request_id, stamped(outcome, request_id, started))

    async def _submit(
        self, ctx: bentoml.Context, name: str, image: Path, raw: Any, masks: Sequence[Path]
    ) -> JSONResponse:
        request_id = self._request_id(ctx)

        async def accept() -> Any:
            parts = await read_files(image, masks)
            return await submit_job(
                self.flows, self.jobs, ctx.request, FLOWS[name], request_id, raw, *parts
            )

        # Decoding a submission takes an admission slot, as a synchronous request does.
        outcome = await self.admission.attempt(f"jobs/{name}", request_id, accept, admit=True)
        response = await self.jobs.respond(ctx.request, request_id, outcome)
        ctx.response.status_code = response.status_code  # BentoML answers with ctx's status
        return response

    async def _execute_job(
        self, route: str, request: dict[str, Any], files: dict[str, bytes], job_id: str
    ) -> dict[str, Any]:
        return await execute_job(self.flows, self.admission, route, request, files, job_id)

    @bentoml.on_startup
    async def _start_jobs(self) -> None:
        await self.jobs.store.start(self._execute_job)

    @bentoml.on_shutdown
    async def _stop_jobs(self) -> None:
        await self.jobs.store.close()

    @staticmethod
    def _request_id(ctx: bentoml.Context) -> str:
        request_id = request_id_from(dict(ctx.request.headers))
        ctx.response.headers[REQUEST_ID_HEADER] = request_id
        return request_id

    async def _job_progress(self, job_id: str) -> dict[str, Any] | None:
        report = await call_runner(self.sd_monitor.to_async.progress, job_ids=[job_id])
        return report.get(job_id)

    async def _export_decoder(self) -> bytes:
        return (await call_runner(self.sam.to_async.decoder_onnx)).tobytes()

    # --- what api/ asks of the service ------------------------------------------------------

    async def decoder_onnx(self) -> tuple[bytes, str]:
        """The loaded SAM model's decoder as ONNX, and its ETag."""
        try:
            return await self.decoders.get((await self.flows.facts.tags(("sam",)))["sam"])
        except (BentoMLException, aiohttp.ClientConnectionError) as exc:
            raise await self._readiness.runner_failure(exc) from exc

    async def readiness(self) -> ReadyResponse:
        report = await self._readiness.report()
        report.jobs = self.jobs.store.health()
        return report


# CORS first (outermost of ours), so that the guard's error responses carry its headers too.
InpaintAnything.add_asgi_middleware(
    CORSMiddleware,
    allow_origins=settings.allowed_origins,
    allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
    allow_headers=["*"],
    expose_headers=[REQUEST_ID_HEADER, *BINARY_HEADERS],
)
# Metrics and logs, then API keys, then the rate limit: see api/production.py.
add_production_middleware(InpaintAnything, settings, extra_routes=["health", "ready"])
InpaintAnything.add_asgi_middleware(
    RequestGuard,
    routes=guarded_routes(),
    max_file_size=settings.max_file_size,
    read_timeout_s=settings.upload_read_timeout_s,
    receiving_bytes=settings.upload_receiving_mb * 1024 * 1024,
    retry_after_s=settings.retry_after_s,
)
InpaintAnything.add_asgi_middleware(PlainErrorsToJson, post_routes=POST_ROUTES)

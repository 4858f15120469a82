"""Inpaint Anything as a BentoML service: the routes, their dependencies and lifecycle.

What each route does is its flow's (flows/: segment, remove, fill, replace, embedding); how a
request is admitted, timed and cancelled is flows.admission's; readiness is flows.readiness's.
This module wires them to HTTP and to the model runners.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import bentoml
from bentoml.exceptions import BentoMLException
from pydantic import BaseModel, WithJsonSchema
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse

from api.app import create_docs_app, create_health_app, document_routes
from api.decoder import DecoderFiles, decoder_router
from api.embedding import BINARY_HEADERS, EmbeddingResponse, wants_binary
from api.errors import REQUEST_ID_HEADER, error_response, request_id_from
from api.guard import RequestGuard
from api.job_routes import document_job_submits, job_router
from api.jobs import JobAccepted, JobStore
from api.plain_errors import PlainErrorsToJson
from api.production import add_production_middleware
from api.schemas import (
    FillRequest,
    InpaintResponse,
    ReadyResponse,
    RemoveRequest,
    ReplaceRequest,
    SegmentRequest,
    SegmentResponse,
)
from config.settings import get_settings
from flows.admission import Admission, ClientGoneException, stamped, unless_disconnected
from flows.context import Background, FlowContext, RunnerFacts, Runners, begin_request
from flows.jobs import submit_job
from flows.readiness import Readiness
from flows.registry import API_PREFIX, FLOWS, JOB_FLOWS, guarded_routes, prepare
from flows.sam3_client import Sam3Client
from flows.sam_client import SamClient
from runners.client import call_runner
from runners.embedding_cache import make_embedding_cache
from runners.lama import LamaRunner
from runners.sam import SamRunner
from runners.sam3 import Sam3Runner
from runners.sd import SdRunner
from utils.decoded_uploads import DecodedUploads
from utils.exceptions import InpaintError, OverloadedException
from utils.log_setup import configure_logging

settings = get_settings()


def _documented_json(model: type[BaseModel]) -> Any:
    """The `request` part: accepted as any JSON and validated by the flow itself (so that a
    bad field is our 422, not BentoML's 400), documented in OpenAPI as `model`."""
    return Annotated[Any, WithJsonSchema({**model.model_json_schema(), "title": model.__name__})]


SegmentRequestPart = _documented_json(SegmentRequest)
RemoveRequestPart = _documented_json(RemoveRequest)
FillRequestPart = _documented_json(FillRequest)
ReplaceRequestPart = _documented_json(ReplaceRequest)
# A `mask` file is optional: BentoML 1.4 cannot take Optional[Path], so it is a list of at
# most one (more is a 422).
MaskParts = list[Path]

health_app = create_health_app(bentoml.get_current_service)
health_app.include_router(decoder_router(bentoml.get_current_service))
health_app.include_router(job_router(bentoml.get_current_service))
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
        self.jobs = JobStore(
            settings.job_max_count,
            settings.job_ttl_s,
            settings.job_max_running,
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
            parts = await _read(image, masks)
            request, upload = await prepare(self.flows, flow, raw, *parts)
            return await flow.run(self.flows, request, upload)

        try:
            attempt = self.admission.attempt(name, request_id, work, admit=True)
            outcome = await unless_disconnected(ctx.request, attempt)
        except ClientGoneException as exc:
            outcome = exc
        return _reply(ctx, request_id, stamped(outcome, request_id, started))

    async def _submit(
        self, ctx: bentoml.Context, name: str, image: Path, raw: Any, masks: Sequence[Path]
    ) -> JobAccepted | JSONResponse:
        request_id = self._request_id(ctx)

        async def accept() -> JobAccepted:
            parts = await _read(image, masks)
            return await submit_job(
                self.flows, self.jobs, self.admission, FLOWS[name], request_id, raw, *parts
            )

        # Decoding a submission takes an admission slot, as a synchronous request does.
        outcome = await self.admission.attempt(f"jobs/{name}", request_id, accept, admit=True)
        if not isinstance(outcome, InpaintError):
            ctx.response.status_code = 202
        return _reply(ctx, request_id, outcome)

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
        return await self._readiness.report()


async def _read(image: Path, masks: Sequence[Path]) -> tuple[bytes, list[bytes]]:
    """The uploaded files' bytes (BentoML has spooled them to disk), read off the event loop."""
    return await asyncio.to_thread(lambda: (image.read_bytes(), [m.read_bytes() for m in masks]))


def _reply(ctx: bentoml.Context, request_id: str, outcome: Any) -> Any:
    """The response for an outcome (the request's log line is api.observe's)."""
    if not isinstance(outcome, InpaintError):
        return outcome
    ctx.response.status_code = int(outcome.status)
    response = error_response(outcome, request_id)
    if isinstance(outcome, OverloadedException):
        response.headers["Retry-After"] = str(settings.retry_after_s)
    return response


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
    RequestGuard, routes=guarded_routes(), max_file_size=settings.max_file_size
)
InpaintAnything.add_asgi_middleware(PlainErrorsToJson, post_routes=POST_ROUTES)

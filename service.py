"""Inpaint Anything as a BentoML service: the four flows, thin orchestration over the runners.

- segment: SAM's three candidate masks for a click (or points, or a box).
- remove:  SAM mask -> dilate -> LaMa -> paste back.
- fill:    SAM mask -> dilate -> SD inpainting in a window around the mask -> paste back.
- replace: SAM mask -> dilate -> SD inpainting of everything *but* the object -> paste back.

Invariant: the response's `mask` is the regenerated region; every pixel outside it is
bit-identical to the input (for PNG output), and the output has the input's size. The three
inpainting flows share one plan (flows.plan), where that invariant lives.
Runners know models, utils know pixels; this module knows the flows.

Bounded work: SAM sees the photo at its working size and returns low-resolution logits that
the entry upsamples (utils.sam_frame); one encoder run per photo however many ask at once
(runners.embedding_cache.SingleFlight); every runner call carries the request's deadline, and
a request whose client goes away is cancelled; at most MAX_CONCURRENT_REQUESTS hold an image.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any, NamedTuple, TypeVar

import aiohttp
import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException
from pydantic import BaseModel, ValidationError, WithJsonSchema
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse

from api.app import create_docs_app, create_health_app, document_routes
from api.decoder import DecoderFiles, decoder_router
from api.embedding import EmbeddingResponse, encode_embedding, sam_input_size
from api.errors import REQUEST_ID_HEADER, error_response, request_id_from
from api.guard import FILE_FIELDS, RequestGuard
from api.metrics import count_embedding_cache
from api.observe import stage
from api.plain_errors import PlainErrorsToJson
from api.production import add_production_middleware
from api.schemas import (
    FillRequest,
    GenerateRequest,
    InpaintMetadata,
    InpaintRequest,
    InpaintResponse,
    ModelReadiness,
    PromptRequest,
    ReadyResponse,
    RemoveRequest,
    ReplaceRequest,
    SegmentMetadata,
    SegmentRequest,
    SegmentResponse,
    utc_timestamp,
)
from config.settings import get_settings
from flows.limits import check_aspect_ratio, check_fill_canvas
from flows.plan import Painted, Painter, Window, paint_region, region_to_paint
from jobs.http import document_job_submits, job_router
from jobs.model import JobAccepted, current_job_id
from jobs.setup import make_jobs
from runners.client import call_runner
from runners.embedding_cache import SingleFlight, embedding_key, make_embedding_cache
from runners.lama import LamaJob, LamaRunner
from runners.runtime import process_memory_mb
from runners.sam import SamJob, SamPrompt, SamRunner
from runners.sd import SdJob, SdRunner
from utils.decoded_uploads import DecodedUploads
from utils.exceptions import (
    EmptyMaskException,
    InpaintError,
    ModelNotLoadedException,
    OverloadedException,
    ProcessingTimeoutException,
    ValidationException,
)
from utils.image_io import (
    DecodedImage,
    decode_image,
    decode_mask_image,
    encode_mask_base64,
    encode_result,
    probe_image,
    to_base64,
)
from utils.log_setup import configure_logging
from utils.masks import binarize_mask, mask_to_png_array
from utils.sam_frame import to_working_image, upsample_masks, working_size
from utils.windows import plan_fill_window, plan_lama_region, plan_letterbox, points_inside

logger = logging.getLogger("inpaint.service")
settings = get_settings()

API_PREFIX = "/api/v1"
ROUTES = {name: f"{API_PREFIX}/{name}" for name in ("segment", "remove", "fill", "replace")}
# The editor's and the jobs' multipart routes (api.embedding, jobs/).
EXTRA_ROUTES = {
    name: f"{API_PREFIX}/{name}"
    for name in ("embedding", "jobs/fill", "jobs/replace", "jobs/remove")
}
JOB_SUBMITS = [EXTRA_ROUTES[f"jobs/{route}"] for route in ("fill", "replace", "remove")]
RequestModel = TypeVar("RequestModel", bound=PromptRequest)
Result = TypeVar("Result", bound=BaseModel)
T = TypeVar("T")


class ClientGoneException(InpaintError):
    """The client closed the connection before the answer; nobody reads this one."""

    status = HTTPStatus.REQUEST_TIMEOUT
    code = "client_closed_request"


def _documented_json(model: type[BaseModel]) -> Any:
    """The `request` part: accepted as any JSON and validated by the flow itself (so that a
    bad field is our 422, not BentoML's 400), documented in OpenAPI as `model`."""
    return Annotated[Any, WithJsonSchema({**model.model_json_schema(), "title": model.__name__})]


SegmentRequestPart = _documented_json(SegmentRequest)
RemoveRequestPart = _documented_json(RemoveRequest)
FillRequestPart = _documented_json(FillRequest)
ReplaceRequestPart = _documented_json(ReplaceRequest)


@dataclass(frozen=True)
class Upload:
    source: DecodedImage  # the RGB the models see, plus alpha and ICC profile for the output
    mask: np.ndarray | None

    @property
    def image(self) -> np.ndarray:
        return self.source.rgb


@dataclass(frozen=True)
class Selection:
    """The object mask the flow works on, and where it came from."""

    mask: np.ndarray
    index: int | None  # SAM's candidate; None when the caller uploaded the mask
    score: float | None


def _parse_request(model: type[RequestModel], raw: Any) -> RequestModel:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValidationException("`request` must be a JSON object")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'request'}: {error['msg']}"
            for error in exc.errors(include_url=False)
        )
        raise ValidationException(f"invalid request: {problems}") from exc


def _check_prompt_inside(prompt: PromptRequest, height: int, width: int) -> None:
    if prompt.point_coords is not None:
        inside = points_inside(np.asarray(prompt.point_coords), (height, width))
        outside = [prompt.point_coords[i] for i in np.flatnonzero(~inside)]
        if outside:
            raise ValidationException(
                f"point(s) {outside} lie outside the {width}x{height} image "
                "(coordinates are [x, y] in pixels)"
            )
    if prompt.box is not None:
        x0, y0, x1, y1 = prompt.box
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise ValidationException(f"box {prompt.box} exceeds the {width}x{height} image")


health_app = create_health_app(bentoml.get_current_service)
health_app.include_router(decoder_router(bentoml.get_current_service))
health_app.include_router(job_router(lambda: bentoml.get_current_service().job_api))


@bentoml.asgi_app(
    create_docs_app(
        lambda: document_job_submits(
            document_routes(
                InpaintAnything.openapi_spec.asdict(),
                [*ROUTES.values(), *EXTRA_ROUTES.values()],
            ),
            JOB_SUBMITS,
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
    # Job progress polls and cancels go through a client of their own, so that frequent
    # polling never shares (or disturbs) the connections long SD calls are waiting on.
    sd_monitor = bentoml.depends(SdRunner)

    def __init__(self) -> None:
        configure_logging(settings.log_level)
        self.cache = make_embedding_cache(settings)
        self._decoded = DecodedUploads(settings.decoded_uploads_mb * 1024 * 1024)
        self._reports: dict[str, dict[str, Any]] = {}
        self.decoders = DecoderFiles(self._export_decoder)
        self.job_api = make_jobs(
            settings,
            progress=self._job_progress,
            cancel=lambda job_id: call_runner(self.sd_monitor.to_async.cancel, job_id=job_id),
        )
        self._flights: SingleFlight[str, tuple[np.ndarray, bool]] = SingleFlight()
        self._admission = asyncio.Semaphore(settings.max_concurrent_requests)
        self._background: set[asyncio.Future[Any]] = set()
        logger.info("SAM embedding cache: %s", self.cache.name)

    # --- the four routes ------------------------------------------------------------------

    @bentoml.api(route=ROUTES["segment"])
    async def segment(
        self, ctx: bentoml.Context, image: Path, request: SegmentRequestPart = None
    ) -> SegmentResponse:
        """SAM's three candidate masks for the prompt, with their scores."""
        return await self._respond(
            ctx, "segment", self._segment, SegmentRequest, image, request, ()
        )

    @bentoml.api(route=ROUTES["remove"])
    async def remove(
        self,
        ctx: bentoml.Context,
        image: Path,
        request: RemoveRequestPart = None,
        mask: list[Path] = (),  # at most one file; BentoML 1.4 cannot take Optional[Path]
    ) -> InpaintResponse:
        """Remove the clicked object: SAM mask, dilated, inpainted by LaMa."""
        return await self._respond(ctx, "remove", self._remove, RemoveRequest, image, request, mask)

    @bentoml.api(route=ROUTES["fill"])
    async def fill(
        self,
        ctx: bentoml.Context,
        image: Path,
        request: FillRequestPart = None,
        mask: list[Path] = (),
    ) -> InpaintResponse:
        """Fill the clicked object's region with what `text_prompt` describes (SD)."""
        return await self._respond(ctx, "fill", self._fill, FillRequest, image, request, mask)

    @bentoml.api(route=ROUTES["replace"])
    async def replace(
        self,
        ctx: bentoml.Context,
        image: Path,
        request: ReplaceRequestPart = None,
        mask: list[Path] = (),
    ) -> InpaintResponse:
        """Keep the clicked object and regenerate everything around it from `text_prompt`."""
        return await self._respond(
            ctx, "replace", self._replace, ReplaceRequest, image, request, mask
        )

    # --- the editor and the jobs (api.embedding, api.decoder, jobs/) ----------------------

    @bentoml.api(route=EXTRA_ROUTES["embedding"])
    async def embedding(self, ctx: bentoml.Context, image: Path) -> EmbeddingResponse:
        """The photo's SAM image embedding, from the cache the routes share, for running
        SAM's decoder (`/api/v1/sam-decoder.onnx`) in the browser."""
        return await self._respond(
            ctx, "embedding", self._embedding, PromptRequest, image, None, ()
        )

    @bentoml.api(route=EXTRA_ROUTES["jobs/fill"])
    async def submit_fill(
        self,
        ctx: bentoml.Context,
        image: Path,
        request: FillRequestPart = None,
        mask: list[Path] = (),
    ) -> JobAccepted:
        """`/fill` as a job: answers 202 at once; follow `status_url`, fetch `result_url`."""
        return await self._submit(ctx, "fill", FillRequest, image, request, mask)

    @bentoml.api(route=EXTRA_ROUTES["jobs/replace"])
    async def submit_replace(
        self,
        ctx: bentoml.Context,
        image: Path,
        request: ReplaceRequestPart = None,
        mask: list[Path] = (),
    ) -> JobAccepted:
        """`/replace` as a job: answers 202 at once; follow `status_url`, fetch `result_url`."""
        return await self._submit(ctx, "replace", ReplaceRequest, image, request, mask)

    @bentoml.api(route=EXTRA_ROUTES["jobs/remove"])
    async def submit_remove(
        self,
        ctx: bentoml.Context,
        image: Path,
        request: RemoveRequestPart = None,
        mask: list[Path] = (),
    ) -> JobAccepted:
        """`/remove` as a job: answers 202 at once; follow `status_url`, fetch `result_url`."""
        return await self._submit(ctx, "remove", RemoveRequest, image, request, mask)

    async def _submit(
        self,
        ctx: bentoml.Context,
        route: str,
        model: type[InpaintRequest],
        image: Path,
        raw_request: Any,
        masks: Sequence[Path],
    ) -> JSONResponse:
        """Check what the input's headers tell (as the synchronous route would), then queue
        the job: the route, the `request` JSON and the encoded upload (jobs/). Nothing is
        decoded here: a submit costs milliseconds and holds no pixels."""
        request_id = request_id_from(dict(ctx.request.headers))
        jobs = self.job_api

        async def accept() -> Any:
            raw, webhook = await jobs.split_request(raw_request)
            if len(masks) > 1:
                raise ValidationException("send at most one `mask` file")
            files = {"image": image.read_bytes()}
            if masks:
                files["mask"] = masks[0].read_bytes()
            request = await asyncio.to_thread(_check_submission, model, raw, files)
            steps = getattr(request, "num_inference_steps", 1) or settings.default_inference_steps
            return await jobs.submit(
                ctx.request, route, request_id, raw or {}, webhook, files, steps
            )

        outcome = await self._attempt(f"jobs/{route}", request_id, accept, admit=True)
        response = await jobs.respond(ctx.request, request_id, outcome)
        ctx.response.status_code = response.status_code  # BentoML answers with ctx's status
        return response

    async def _execute_job(
        self, route: str, raw_request: dict[str, Any], files: dict[str, bytes], job_id: str
    ) -> dict[str, Any]:
        """Run one job (jobs.model.Execute): the route's flow on the stored upload."""
        flow, model = {
            "fill": (self._fill, FillRequest),
            "replace": (self._replace, ReplaceRequest),
            "remove": (self._remove, RemoveRequest),
        }[route]
        _DEADLINE.set(time.time() + settings.processing_timeout_s)
        _REQUEST.set(job_id)
        begun = time.perf_counter()

        async def work() -> BaseModel:
            mask = [_Bytes(files["mask"])] if "mask" in files else []
            request, upload = await self._prepare(model, _Bytes(files["image"]), raw_request, mask)
            return await flow(request, upload)

        outcome = _stamped(await self._attempt(route, job_id, work), job_id, begun)
        if isinstance(outcome, InpaintError):
            raise outcome
        return outcome.model_dump(mode="json")

    @bentoml.on_startup
    async def _start_jobs(self) -> None:
        await self.job_api.store.start(self._execute_job)

    @bentoml.on_shutdown
    async def _stop_jobs(self) -> None:
        await self.job_api.store.close()

    async def _job_progress(self, job_id: str) -> dict[str, Any] | None:
        report = await call_runner(self.sd_monitor.to_async.progress, job_ids=[job_id])
        return report.get(job_id)

    async def _export_decoder(self) -> bytes:
        return (await call_runner(self.sam.to_async.decoder_onnx)).tobytes()

    async def decoder_onnx(self) -> tuple[bytes, str]:
        """The loaded SAM model's decoder as ONNX, and its ETag."""
        try:
            return await self.decoders.get((await self._model_tags())["sam"])
        except (BentoMLException, aiohttp.ClientConnectionError) as exc:
            raise await self._runner_error(exc) from exc

    # --- request handling shared by the routes ------------------------------------------------

    async def _respond(
        self,
        ctx: bentoml.Context,
        route: str,
        flow: Callable[[Any, Upload], Awaitable[BaseModel]],
        model: type[PromptRequest],
        image: Path,
        raw_request: Any,
        masks: Sequence[Path],
    ) -> BaseModel | JSONResponse:
        request_id = request_id_from(dict(ctx.request.headers))
        ctx.response.headers[REQUEST_ID_HEADER] = request_id
        started = time.perf_counter()
        # The deadline travels with every runner call, so queued work past it is skipped.
        _DEADLINE.set(time.time() + settings.processing_timeout_s)
        _REQUEST.set(request_id)

        async def work() -> BaseModel:
            request, upload = await self._prepare(model, image, raw_request, masks)
            return await flow(request, upload)

        try:
            outcome = await _unless_disconnected(
                ctx, self._attempt(route, request_id, work, admit=True)
            )
        except ClientGoneException as exc:
            outcome = exc
        return self._reply(ctx, request_id, _stamped(outcome, request_id, started))

    async def _attempt(
        self,
        route: str,
        request_id: str,
        work: Callable[[], Awaitable[Result]],
        admit: bool = False,
    ) -> Result | InpaintError:
        """`work()` within the processing timeout; any failure as the error a client gets.
        With `admit`, the work first waits for one of the MAX_CONCURRENT_REQUESTS slots that
        bound the decoded images held at once; no slot within the deadline is 503 overloaded."""
        admitted = not admit
        try:
            async with asyncio.timeout(settings.processing_timeout_s):
                if admitted:
                    return await work()
                async with self._admission:
                    admitted = True
                    return await work()
        except TimeoutError:
            if not admitted:
                return OverloadedException(
                    f"no capacity freed up within {settings.processing_timeout_s:g} s; "
                    "retry shortly"
                )
            return ProcessingTimeoutException(
                f"processing took longer than {settings.processing_timeout_s:g} s"
            )
        except InpaintError as exc:
            return exc
        except (BentoMLException, aiohttp.ClientConnectionError) as exc:
            return await self._runner_error(exc)
        except Exception as exc:
            logger.exception("%s %s failed", route, request_id)
            detail = f": {exc!r}" if settings.debug and not settings.is_production else ""
            return InpaintError(f"an unexpected error occurred; see the server log{detail}")

    def _reply(
        self, ctx: bentoml.Context, request_id: str, outcome: Result | InpaintError
    ) -> Result | JSONResponse:
        """The response for an outcome (the request's log line is api.observe's)."""
        if not isinstance(outcome, InpaintError):
            return outcome
        ctx.response.status_code = int(outcome.status)
        response = error_response(outcome, request_id)
        if isinstance(outcome, OverloadedException):
            response.headers["Retry-After"] = str(settings.retry_after_s)
        return response

    async def _prepare(
        self,
        model: type[RequestModel],
        image: Path,
        raw_request: Any,
        masks: Sequence[Path],
    ) -> tuple[RequestModel, Upload]:
        """The validated `request` part and the decoded upload."""
        request = _parse_request(model, raw_request)
        if len(masks) > 1:
            raise ValidationException("send at most one `mask` file")
        with stage("decode"):
            upload = await self._read_upload(image, masks[0] if masks else None)
        return request, upload

    async def _read_upload(self, image_path: Path, mask_path: Path | None) -> Upload:
        source = await asyncio.to_thread(
            lambda: self._decoded.decode(
                image_path.read_bytes(),
                functools.partial(decode_image, max_pixels=settings.max_image_pixels),
            )
        )
        image = source.rgb
        check_aspect_ratio(*image.shape[:2], settings.max_aspect_ratio)
        if mask_path is None:
            return Upload(source, None)
        raw_mask = await asyncio.to_thread(
            lambda: decode_mask_image(mask_path.read_bytes(), settings.max_image_pixels)
        )
        if raw_mask.shape[:2] != image.shape[:2]:
            raise ValidationException(
                f"the mask is {raw_mask.shape[1]}x{raw_mask.shape[0]} but the image is "
                f"{image.shape[1]}x{image.shape[0]}; they must match"
            )
        return Upload(source, await asyncio.to_thread(binarize_mask, raw_mask))

    # --- SAM --------------------------------------------------------------------------------

    async def embedding_for(self, image: np.ndarray) -> SamEmbedding:
        """The photo's SAM embedding (256x64x64 float32), its cache key and whether it came
        from the cache. One encoder run per distinct photo and SAM model, however many
        requests ask at once (in this process; Redis shares results across replicas)."""
        # Keyed by the photo itself: a click on a cached photo skips the resize.
        key = await asyncio.to_thread(embedding_key, image, (await self._model_tags())["sam"])

        async def compute() -> tuple[np.ndarray, bool]:
            with stage("cache"):
                cached = await self.cache.get(key)
            if cached is not None:
                return cached, True
            with stage("embed"):
                working = await asyncio.to_thread(to_working_image, image)
                embedding = await self._encode(working, key)
            with stage("cache"):
                await self.cache.put(key, embedding)
            return embedding, False

        while True:
            try:
                (embedding, cached), joined = await self._flights.run(key, compute)
            except _Skipped:
                # The flight's starter gave up and the runner skipped it; ours is still on.
                if time.time() >= _deadline():
                    raise TimeoutError from None
                continue
            count_embedding_cache(hit=cached or joined)
            return SamEmbedding(key, embedding, cached or joined)

    async def _encode(self, working: np.ndarray, key: str) -> np.ndarray:
        job = SamJob(image=working, deadline=_deadline(), call_id=uuid.uuid4().hex, key=key)
        try:
            embedding = (await call_runner(self.sam.to_async.embed, [job]))[0]
        except asyncio.CancelledError:  # every waiter went away: the runner may skip it
            logger.info("request %s gave up: cancelling SAM call %s", _REQUEST.get(), job.call_id)
            self._in_background(call_runner(self.sam.to_async.cancel, [job.call_id]))
            raise
        if embedding.size == 0:
            raise _Skipped
        return embedding

    async def _candidates(
        self, image: np.ndarray, prompt: PromptRequest
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """SAM's (3x256x256 logits, 3 scores, embedding cached?) for the prompt."""
        found = await self.embedding_for(image)
        sam_prompt = SamPrompt(
            point_coords=prompt.point_coords, point_labels=prompt.point_labels, box=prompt.box
        )

        async def decode(embedding: np.ndarray | None) -> dict[str, Any]:
            return await call_runner(
                self.sam.to_async.decode,
                embedding_key=found.key,
                original_size=list(image.shape[:2]),
                prompt=sam_prompt,
                embedding=embedding,
                deadline=_deadline(),
            )

        with stage("mask"):
            # The runner most likely still holds the embedding (it made it, or was sent it
            # for the previous click); 4 MB cross only when it does not.
            result = await decode(None)
            if result.get("unknown_embedding"):
                result = await decode(found.embedding)
        if result.get("expired"):
            raise TimeoutError
        logits = np.asarray(result["low_res_logits"], dtype=np.float32)
        return logits, np.asarray(result["scores"], dtype=float), found.cached

    async def _prompted_candidates(
        self, request: PromptRequest, image: np.ndarray, alternative: str = ""
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """`_candidates` for a request's prompt, once the prompt is known to fit the image."""
        _check_prompt(request, image, alternative)
        return await self._candidates(image, request)

    async def _select(self, request: PromptRequest, upload: Upload) -> Selection:
        """The object mask: the uploaded one, or SAM's candidate for the prompt."""
        await _check_selection(request, upload)
        if upload.mask is not None:
            return Selection(upload.mask, None, None)
        image = upload.image
        logits, scores, _ = await self._candidates(image, request)  # prompt checked above
        index = int(np.argmax(scores)) if request.mask_index is None else request.mask_index
        mask = (await asyncio.to_thread(_masks, logits[index : index + 1], image))[0]
        if not await asyncio.to_thread(mask.any):
            raise EmptyMaskException(
                f"SAM's mask {index} for this prompt is empty; click elsewhere, choose another "
                "mask_index or upload a mask"
            )
        return Selection(mask, index, float(scores[index]))

    # --- flows ------------------------------------------------------------------------------

    async def _embedding(self, _: PromptRequest, upload: Upload) -> EmbeddingResponse:
        height, width = upload.image.shape[:2]
        found = await self.embedding_for(upload.image)
        data, dtype, shape = await asyncio.to_thread(encode_embedding, found.embedding)
        tags = await self._tags_of(("sam",))
        return EmbeddingResponse(
            request_id="",
            timestamp=utc_timestamp(),
            embedding=data,
            dtype=dtype,
            shape=shape,
            input_size=sam_input_size(height, width),
            original_size=[height, width],
            model=tags["sam"],
            key=found.key,
            metadata=SegmentMetadata(
                width=width,
                height=height,
                processing_time_ms=0.0,
                models=tags,
                device=await self._device_of("sam"),
                embedding_cached=found.cached,
            ),
        )

    async def _segment(self, request: SegmentRequest, upload: Upload) -> SegmentResponse:
        height, width = upload.image.shape[:2]
        logits, scores, cached = await self._prompted_candidates(request, upload.image)
        with stage("encode"):
            candidates = await asyncio.to_thread(_masks, logits, upload.image)
            # Three PNGs at once: OpenCV's encoder runs without the GIL.
            masks = list(
                await asyncio.gather(
                    *(asyncio.to_thread(encode_mask_base64, m) for m in candidates)
                )
            )
        return SegmentResponse(
            request_id="",
            timestamp=utc_timestamp(),
            masks=masks,
            scores=[float(s) for s in scores],
            best_index=int(np.argmax(scores)),
            metadata=SegmentMetadata(
                width=width,
                height=height,
                processing_time_ms=0.0,
                models=await self._tags_of(("sam",)),
                device=await self._device_of("sam"),
                embedding_cached=cached,
            ),
        )

    async def _remove(self, request: RemoveRequest, upload: Upload) -> InpaintResponse:
        return await self._inpaint("remove", request, upload)

    async def _fill(self, request: FillRequest, upload: Upload) -> InpaintResponse:
        return await self._inpaint("fill", request, upload)

    async def _replace(self, request: ReplaceRequest, upload: Upload) -> InpaintResponse:
        return await self._inpaint("replace", request, upload)

    async def _inpaint(self, flow: str, request: InpaintRequest, upload: Upload) -> InpaintResponse:
        """The plan every inpainting flow shares (flows.plan): select -> dilate -> window ->
        run -> paste back. Only the window and the painting runner differ."""
        image = upload.image
        size = image.shape[:2]
        if flow == "fill":  # its canvas is checked before any model runs
            check_fill_canvas(*size, await self._sd_resolution(), settings.max_canvas_pixels)
        selection = await self._select(request, upload)
        kernel = _kernel(request, FLOW_KERNELS[flow])
        region = await region_to_paint(selection.mask, kernel, keep_object=flow == "replace")
        window, paint, model, seed = await self._painter(flow, request, size, region)
        painted = await paint_region(image, region, window, paint)
        return await self._inpaint_response(
            request, upload.source, painted, selection, model, kernel, seed, window.kind
        )

    async def _painter(
        self, flow: str, request: InpaintRequest, size: tuple[int, int], region: np.ndarray
    ) -> tuple[Window, Painter, str, int | None]:
        """(window, painter, painting model, seed) of a flow."""
        if flow == "remove":
            window = await asyncio.to_thread(
                plan_lama_region, size, region, settings.max_image_size, settings.lama_crop_margin
            )
            return window, self._paint_lama, "lama", None
        if not isinstance(request, GenerateRequest):  # pragma: no cover - routes guarantee it
            raise TypeError(f"{flow} needs a GenerateRequest")
        resolution = await self._sd_resolution()
        if flow == "fill":
            window = await asyncio.to_thread(plan_fill_window, size, region, resolution)
        else:
            window = plan_letterbox(size, resolution)
        seed = request.seed if request.seed is not None else secrets.randbelow(2**32)
        return window, functools.partial(self._paint_sd, request, seed), "sd", seed

    async def _paint_lama(self, part: np.ndarray, part_mask: np.ndarray) -> np.ndarray:
        job = LamaJob(item=np.dstack([part, mask_to_png_array(part_mask)]), deadline=_deadline())
        with stage("inpaint"):
            painted = (await call_runner(self.lama.to_async.inpaint, [job]))[0]
        if painted.size == 0:
            raise TimeoutError  # the runner skipped it: past the deadline
        return painted

    async def _paint_sd(
        self, request: GenerateRequest, seed: int, part: np.ndarray, part_mask: np.ndarray
    ) -> np.ndarray:
        job = _sd_job(request, part, part_mask, seed)
        try:
            with stage("inpaint"):
                generated = (await call_runner(self.sd.to_async.inpaint, [job]))[0]
        except asyncio.CancelledError:  # the caller went away: the runner stops at its next step
            logger.info("request %s gave up: cancelling SD job %s", _REQUEST.get(), job.job_id)
            self._in_background(call_runner(self.sd.to_async.cancel, job.job_id))
            raise
        if generated.size == 0:
            raise TimeoutError  # the runner skipped it: past the deadline
        return generated

    async def _inpaint_response(
        self,
        request: InpaintRequest,
        source: DecodedImage,
        painted: Painted,
        selection: Selection,
        model: str,
        kernel: int,
        seed: int | None,
        strategy: str,
    ) -> InpaintResponse:
        height, width = painted.image.shape[:2]
        with stage("encode"):
            image_b64, mask_b64 = await asyncio.to_thread(
                lambda: (
                    to_base64(
                        encode_result(source, painted.image, painted.region, request.output_format)
                    ),
                    encode_mask_base64(painted.region),
                )
            )
        kinds = (model,) if selection.index is None else ("sam", model)
        return InpaintResponse(
            request_id="",
            timestamp=utc_timestamp(),
            image=image_b64,
            mask=mask_b64,
            metadata=InpaintMetadata(
                width=width,
                height=height,
                processing_time_ms=0.0,
                mask_index=selection.index,
                mask_score=selection.score,
                models=await self._tags_of(kinds),
                device=await self._device_of(model),
                dilate_kernel_size=kernel,
                seed=seed,
                strategy=strategy,
            ),
        )

    def _in_background(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(_log_failure)
        task.add_done_callback(self._background.discard)

    # --- runner facts -----------------------------------------------------------------------

    async def _report(self, kind: str) -> dict[str, Any]:
        """A loaded runner's status, fetched once (tags and devices do not change)."""
        if kind not in self._reports:
            runner = {"sam": self.sam, "lama": self.lama, "sd": self.sd}[kind]
            report = await call_runner(runner.to_async.status)
            if not report["loaded"]:
                raise ModelNotLoadedException(
                    f"the {kind} model {report['tag']} is not loaded: {report['error']}"
                )
            self._reports[kind] = report
        return self._reports[kind]

    async def _model_tags(self) -> dict[str, str]:
        return {"sam": (await self._report("sam"))["tag"]}

    async def _tags_of(self, kinds: Sequence[str]) -> dict[str, str]:
        return {kind: (await self._report(kind))["tag"] for kind in kinds}

    async def _device_of(self, kind: str) -> str:
        return str((await self._report(kind))["device"])

    async def _sd_resolution(self) -> int:
        return int((await self._report("sd"))["details"]["native_resolution"])

    async def _runner_error(self, exc: Exception) -> InpaintError:
        """A runner's failure as the client sees it. BentoML answers 503 both for a runner
        whose model is not loaded and for one shedding load, and a runner that does not
        answer at all may be down or saturated: readiness tells these apart."""
        unreachable = isinstance(exc, aiohttp.ClientConnectionError)
        if not unreachable and int(getattr(exc, "error_code", 500)) != 503:
            logger.error("runner call failed: %r", exc)
            return InpaintError("a model runner failed; see the server log")
        readiness = await self.readiness()
        if all(report.loaded for report in readiness.models.values()):
            return OverloadedException("the model runners are at capacity; retry shortly")
        return ModelNotLoadedException("; ".join(readiness.problems))

    async def readiness(self) -> ReadyResponse:
        """Every runner's load state; a runner that does not answer counts as not loaded."""
        runners = {"sam": self.sam, "lama": self.lama, "sd": self.sd}

        async def ask(kind: str) -> ModelReadiness:
            try:
                async with asyncio.timeout(10):
                    return ModelReadiness.model_validate(
                        await call_runner(runners[kind].to_async.status)
                    )
            except Exception as exc:
                return ModelReadiness(loaded=False, tag="unknown", error=f"no answer: {exc!r}")

        reports = dict(zip(runners, await asyncio.gather(*map(ask, runners)), strict=True))
        problems = [
            f"{kind}: {report.error or 'not loaded'}"
            for kind, report in reports.items()
            if not report.loaded
        ]
        demo = [kind for kind, report in reports.items() if report.demo]
        if demo and settings.is_production:
            problems.append(f"ENVIRONMENT=production but {', '.join(demo)} serve demo models")
        return ReadyResponse(
            ready=not problems,
            problems=problems,
            demo_models=bool(demo),
            models=reports,
            process_memory_mb=process_memory_mb(),
            jobs=self.job_api.store.health(),
        )


def _check_submission(
    model: type[InpaintRequest], raw: Any, files: dict[str, bytes]
) -> InpaintRequest:
    """A job's `request` and its upload, checked from the image headers alone: what the
    synchronous route refuses before decoding pixels. A corrupt body or an empty mask fails
    the job when it runs, with the same error."""
    request = _parse_request(model, raw)
    height, width = probe_image(files["image"], settings.max_image_pixels)
    check_aspect_ratio(height, width, settings.max_aspect_ratio)
    if "mask" not in files:
        if not request.has_prompt:
            raise ValidationException("give point_coords or box in `request` or upload a mask")
        _check_prompt_inside(request, height, width)
        return request
    mask_height, mask_width = probe_image(files["mask"], settings.max_image_pixels, "mask")
    if (mask_height, mask_width) != (height, width):
        raise ValidationException(
            f"the mask is {mask_width}x{mask_height} but the image is {width}x{height}; "
            "they must match"
        )
    if request.has_prompt or request.mask_index is not None:
        raise ValidationException(
            "send either a mask or SAM prompts (point_coords, box, mask_index), not both"
        )
    return request


def _check_prompt(request: PromptRequest, image: np.ndarray, alternative: str = "") -> None:
    if not request.has_prompt:
        raise ValidationException(
            " ".join(["give point_coords or box in `request`", alternative]).strip()
        )
    _check_prompt_inside(request, *image.shape[:2])


async def _check_selection(request: PromptRequest, upload: Upload) -> None:
    """What can be said of the object selection before SAM runs."""
    if upload.mask is None:
        _check_prompt(request, upload.image, "or upload a mask")
    elif request.has_prompt or request.mask_index is not None:
        raise ValidationException(
            "send either a mask or SAM prompts (point_coords, box, mask_index), not both"
        )
    elif not await asyncio.to_thread(upload.mask.any):
        raise EmptyMaskException("the uploaded mask has no non-zero pixel")


def _stamped(outcome: Result | InpaintError, request_id: str, started: float) -> Any:
    """A response body with its request id and processing time; errors pass through."""
    if not isinstance(outcome, InpaintError):
        outcome.request_id = request_id  # type: ignore[attr-defined]
        elapsed_ms = (time.perf_counter() - started) * 1000
        outcome.metadata.processing_time_ms = round(elapsed_ms, 1)  # type: ignore[attr-defined]
    return outcome


def _kernel(request: InpaintRequest, default: int) -> int:
    return default if request.dilate_kernel_size is None else request.dilate_kernel_size


def _sd_job(request: GenerateRequest, image: np.ndarray, mask: np.ndarray, seed: int) -> SdJob:
    return SdJob(
        image=image,
        mask=mask,
        prompt=request.text_prompt,
        negative_prompt=request.negative_prompt,
        num_inference_steps=request.num_inference_steps or settings.default_inference_steps,
        guidance_scale=(
            settings.default_guidance_scale
            if request.guidance_scale is None
            else request.guidance_scale
        ),
        seed=seed,
        # A job's own id (jobs/), else one for this call: `cancel` names it.
        job_id=current_job_id.get() or uuid.uuid4().hex,
        deadline=_deadline(),
    )


FLOW_KERNELS = {
    "remove": settings.remove_dilate_kernel_size,
    "fill": settings.fill_dilate_kernel_size,
    "replace": settings.replace_dilate_kernel_size,
}

# The absolute deadline (epoch seconds) of the request being handled; runners skip work past it.
_DEADLINE: ContextVar[float | None] = ContextVar("deadline", default=None)
_REQUEST: ContextVar[str] = ContextVar("request_id", default="-")  # for the log only


def _deadline() -> float:
    deadline = _DEADLINE.get()
    return time.time() + settings.processing_timeout_s if deadline is None else deadline


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("background runner call failed: %r", task.exception())


class _Skipped(Exception):
    """A runner skipped the work: its deadline had passed when it left the queue."""


class _Bytes(NamedTuple):
    """A stored upload where the flows read a file (`read_bytes`)."""

    data: bytes

    def read_bytes(self) -> bytes:
        return self.data


class SamEmbedding(NamedTuple):
    key: str  # the embedding cache key
    embedding: np.ndarray  # 256x64x64 float32
    cached: bool  # True when this request did not run the encoder (cache or a shared run)


def _masks(logits: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Kx256x256 SAM logits -> KxHxW bool masks of `image`, as SamPredictor makes them."""
    height, width = image.shape[:2]
    return upsample_masks(logits, working_size(height, width), (height, width))


_DISCONNECT_POLL_S = 0.25


async def _unless_disconnected(ctx: bentoml.Context, work: Awaitable[T]) -> T:
    """`await work`, cancelled (and with it the runner calls it waits on) if the client goes
    away meanwhile."""
    task = asyncio.ensure_future(work)
    request = ctx.request

    async def watch() -> None:
        try:
            while not await request.is_disconnected():
                await asyncio.sleep(_DISCONNECT_POLL_S)
        except Exception:  # cannot tell: never claim a disconnect
            logger.debug("disconnect detection unavailable", exc_info=True)
            await asyncio.Event().wait()

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        logger.info("client went away; its work is cancelled")
        raise ClientGoneException("the client closed the connection")
    return task.result()


# CORS first (outermost of ours), so that the guard's error responses carry its headers too.
InpaintAnything.add_asgi_middleware(
    CORSMiddleware,
    allow_origins=settings.allowed_origins,
    allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
    allow_headers=["*"],
    expose_headers=[REQUEST_ID_HEADER],
)
# Metrics and logs, then API keys, then the rate limit: see api/production.py.
add_production_middleware(InpaintAnything, settings, extra_routes=["health", "ready"])
InpaintAnything.add_asgi_middleware(
    RequestGuard,
    routes={
        **{
            path: FILE_FIELDS[:1] if name == "segment" else FILE_FIELDS
            for name, path in ROUTES.items()
        },
        EXTRA_ROUTES["embedding"]: FILE_FIELDS[:1],
        **{path: FILE_FIELDS for path in JOB_SUBMITS},
    },
    max_file_size=settings.max_file_size,
    read_timeout_s=settings.upload_read_timeout_s,
    receiving_bytes=settings.upload_receiving_mb * 1024 * 1024,
    retry_after_s=settings.retry_after_s,
)
InpaintAnything.add_asgi_middleware(
    PlainErrorsToJson, post_routes=[*ROUTES.values(), *EXTRA_ROUTES.values()]
)

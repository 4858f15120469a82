"""Stable Diffusion runner: a diffusers inpainting pipeline (SD 1.x, 2.x or SDXL).

Every window it gets is the pipeline's native square, so a batch is grouped by the
parameters one pipeline call must share (steps, guidance, size) and each group runs as one
call, with one seeded `torch.Generator` per item: an item's pixels do not depend on its
neighbours' seeds.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import bentoml
import numpy as np
from pydantic import BaseModel, ConfigDict, WithJsonSchema

from config.settings import get_settings
from models.store import SD_FOLDER, resolve_tags
from runners.queue_metrics import RunnerArrivals, model_work_started
from runners.runtime import ModelRunner, batching, runner_service_config
from runners.sd_progress import make_board
from utils.breaker import Breaker
from utils.masks import mask_to_png_array
from utils.metrics import record_breaker

if TYPE_CHECKING:
    import torch

settings = get_settings()
logger = logging.getLogger("inpaint.runners")
SKIPPED = np.zeros((0,), dtype=np.uint8)  # what an expired job gets instead of a window


class _Expired(Exception):
    """Every job of a pipeline call is past its deadline: stop denoising."""


def _expired(jobs: list[SdJob]) -> bool:
    now = time.time()
    return all(job.deadline is not None and now > job.deadline for job in jobs)


# Jobs cross the process boundary pickled; the schema is only for BentoML's generated docs.
Array = Annotated[np.ndarray, WithJsonSchema({"type": "array", "description": "numpy array"})]


class SdJob(BaseModel):
    """One inpainting window: SxSx3 uint8 image, SxS bool mask (True = paint)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    image: Array
    mask: Array
    prompt: str
    negative_prompt: str | None = None
    num_inference_steps: int
    guidance_scale: float
    seed: int
    job_id: str | None = None  # progress is reported, and `cancel` stops it, by this id
    deadline: float | None = None  # epoch seconds; past it the caller has given up

    def group_key(self) -> tuple[int, float, tuple[int, ...]]:
        return (self.num_inference_steps, self.guidance_scale, self.image.shape)


@bentoml.service(name="sd_runner", **runner_service_config(settings))
class SdRunner(ModelRunner):
    kind = "sd"
    model_ref = bentoml.models.BentoModel(resolve_tags(settings)["sd"])
    board = make_board(
        settings.redis_url,
        settings.job_ttl_s,
        Breaker(
            "redis (SD progress)",
            settings.redis_budget_ms / 1000,
            settings.redis_breaker_failures,
            settings.redis_breaker_open_s,
            on_change=record_breaker,
        ),
    )

    def load(self, path: Path, metadata: dict[str, Any], device: torch.device) -> dict[str, Any]:
        from models.sd_pipeline import load_inpaint_pipeline, native_resolution

        fp16 = device.type == "cuda" and settings.sd_fp16_on_cuda
        self.pipeline = load_inpaint_pipeline(path / SD_FOLDER, device, fp16=fp16)
        from runners.fast_paths import prepare_unet, sd_unet

        unet = sd_unet(self.pipeline, path, device, self.threads)
        prepare_unet(self.pipeline, device)  # after sd_unet: the lock wraps the UNet it chose
        return {
            "native_resolution": native_resolution(self.pipeline),
            "pipeline": type(self.pipeline).__name__,
            "dtype": "float16" if fp16 else "float32",
            "unet": unet,
        }

    def warm_up(self, device: torch.device) -> None:
        from models.sd_pipeline import native_resolution
        from runners.fast_paths import warm_up_sd

        warm_up_sd(self.pipeline, native_resolution(self.pipeline))

    @bentoml.api(**batching(settings.sd_max_batch_size, settings))
    def inpaint(self, jobs: list[SdJob]) -> list[np.ndarray]:
        """Generated SxSx3 uint8 windows, in the order of `jobs`; `SKIPPED` (an empty array)
        for a job whose deadline passed before or while it ran."""
        self.state.require()
        model_work_started(self.kind, "inpaint", len(jobs))
        groups: dict[tuple[int, float, tuple[int, ...]], list[int]] = defaultdict(list)
        for index, job in enumerate(jobs):
            if not _expired([job]):
                groups[job.group_key()].append(index)
        results = [SKIPPED] * len(jobs)
        for indices in groups.values():
            group = [jobs[i] for i in indices]
            ids = [job.job_id for job in group if job.job_id]
            if self.board.all_cancelled(ids):
                logger.info("SD jobs %s skipped: cancelled by their callers", ", ".join(ids))
                continue  # jobs cancelled while queued never start (SKIPPED)
            try:
                images = self._run(group)
            except _Expired:
                continue
            for index, image in zip(indices, images, strict=True):
                results[index] = image
        return results

    def _run(self, jobs: list[SdJob]) -> list[np.ndarray]:
        import torch
        from PIL import Image

        device = self.state.device
        height, width = jobs[0].image.shape[:2]
        negative = [job.negative_prompt or "" for job in jobs]
        job_ids = [job.job_id for job in jobs if job.job_id]
        steps = jobs[0].num_inference_steps
        with torch.inference_mode():
            output = self.pipeline(
                prompt=[job.prompt for job in jobs],
                negative_prompt=negative if any(negative) else None,
                image=[Image.fromarray(job.image) for job in jobs],
                mask_image=[Image.fromarray(mask_to_png_array(job.mask)) for job in jobs],
                height=height,
                width=width,
                num_inference_steps=steps,
                guidance_scale=jobs[0].guidance_scale,
                generator=[torch.Generator(device).manual_seed(job.seed) for job in jobs],
                output_type="np",
                callback_on_step_end=self._step_callback(jobs, job_ids, steps),
            )
        return [np.clip(np.rint(image * 255), 0, 255).astype(np.uint8) for image in output.images]

    @bentoml.api
    async def progress(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Step k of n (and an ETA) of the given jobs that have started; async, so that it
        is answered while `inpaint` runs."""
        return self.board.report(job_ids)

    @bentoml.api
    async def cancel(self, job_id: str) -> None:
        """Stop the job at its next step, or before it starts."""
        self.board.cancel(job_id)

    @bentoml.api
    async def status(self) -> dict[str, Any]:
        return self.state.report()

    def _step_callback(
        self, jobs: list[SdJob], job_ids: list[str], steps: int
    ) -> Callable[..., dict[str, Any]]:
        """diffusers' `callback_on_step_end`: report job progress (and stop cancelled jobs),
        then stop a call whose every caller has given up."""
        progress = self.board.callback(job_ids, steps) if job_ids else None

        def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> Any:
            if progress is not None:
                tensors = progress(pipe, step, timestep, tensors)
            return _stop_if_expired(jobs, tensors)

        return on_step_end


SdRunner.add_asgi_middleware(RunnerArrivals)


def _stop_if_expired(jobs: list[SdJob], tensors: dict[str, Any]) -> dict[str, Any]:
    """A call whose every caller has given up stops denoising."""
    if _expired(jobs):
        raise _Expired
    return tensors

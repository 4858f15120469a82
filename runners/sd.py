"""Stable Diffusion runner: a diffusers inpainting pipeline (SD 1.x, 2.x or SDXL).

Every window it gets is the pipeline's native square, so a batch is grouped by the
parameters one pipeline call must share (steps, guidance, size) and each group runs as one
call, with one seeded `torch.Generator` per item: an item's pixels do not depend on its
neighbours' seeds.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import bentoml
import numpy as np
from pydantic import BaseModel, ConfigDict, WithJsonSchema

from config.settings import get_settings
from models.store import SD_FOLDER, resolve_tags
from runners.queue_metrics import RunnerArrivals, model_work_started
from runners.runtime import ModelRunner, batching, runner_service_config
from runners.sd_progress import ProgressBoard
from utils.masks import mask_to_png_array

if TYPE_CHECKING:
    import torch

settings = get_settings()


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
    job_id: str | None = None  # set for a job (api.jobs): its progress is reported by id

    def group_key(self) -> tuple[int, float, tuple[int, ...]]:
        return (self.num_inference_steps, self.guidance_scale, self.image.shape)


@bentoml.service(name="sd_runner", **runner_service_config(settings))
class SdRunner(ModelRunner):
    kind = "sd"
    model_ref = bentoml.models.BentoModel(resolve_tags(settings)["sd"])
    board = ProgressBoard()

    def load(self, path: Path, metadata: dict[str, Any], device: torch.device) -> dict[str, Any]:
        from models.sd_pipeline import load_inpaint_pipeline, native_resolution

        fp16 = device.type == "cuda" and settings.sd_fp16_on_cuda
        self.pipeline = load_inpaint_pipeline(path / SD_FOLDER, device, fp16=fp16)
        return {
            "native_resolution": native_resolution(self.pipeline),
            "pipeline": type(self.pipeline).__name__,
            "dtype": "float16" if fp16 else "float32",
        }

    @bentoml.api(**batching(settings.sd_max_batch_size, settings))
    def inpaint(self, jobs: list[SdJob]) -> list[np.ndarray]:
        """Generated SxSx3 uint8 windows, in the order of `jobs`."""
        self.state.require()
        model_work_started(self.kind, "inpaint", len(jobs))
        groups: dict[tuple[int, float, tuple[int, ...]], list[int]] = defaultdict(list)
        for index, job in enumerate(jobs):
            groups[job.group_key()].append(index)
        results: list[np.ndarray | None] = [None] * len(jobs)
        for indices in groups.values():
            group = [jobs[i] for i in indices]
            if self.board.all_cancelled([job.job_id for job in group if job.job_id]):
                # Jobs cancelled while queued never start; the entry discards their result.
                group_images = [np.zeros_like(job.image) for job in group]
            else:
                group_images = self._run(group)
            for index, image in zip(indices, group_images, strict=True):
                results[index] = image
        return results  # type: ignore[return-value]

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
                callback_on_step_end=self.board.callback(job_ids, steps) if job_ids else None,
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
    def status(self) -> dict[str, Any]:
        return self.state.report()


SdRunner.add_asgi_middleware(RunnerArrivals)

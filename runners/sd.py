"""Stable Diffusion runner: a diffusers inpainting pipeline (SD 1.x, 2.x or SDXL).

Every window it gets is the pipeline's native square, so a batch is grouped by the
parameters one pipeline call must share (steps, guidance, size) and each group runs as one
call, with one seeded `torch.Generator` per item: an item's pixels do not depend on its
neighbours' seeds.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import bentoml
import numpy as np
from pydantic import BaseModel, ConfigDict, WithJsonSchema

from config.settings import get_settings
from models.store import SD_FOLDER, resolve_tags
from runners.runtime import ModelRunner, batching, runner_service_config
from utils.masks import mask_to_png_array

if TYPE_CHECKING:
    import torch

settings = get_settings()
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
    deadline: float | None = None  # epoch seconds; past it the caller has given up

    def group_key(self) -> tuple[int, float, tuple[int, ...]]:
        return (self.num_inference_steps, self.guidance_scale, self.image.shape)


@bentoml.service(name="sd_runner", **runner_service_config(settings))
class SdRunner(ModelRunner):
    kind = "sd"
    model_ref = bentoml.models.BentoModel(resolve_tags(settings)["sd"])

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
        """Generated SxSx3 uint8 windows, in the order of `jobs`; `SKIPPED` (an empty array)
        for a job whose deadline passed before or while it ran."""
        self.state.require()
        groups: dict[tuple[int, float, tuple[int, ...]], list[int]] = defaultdict(list)
        for index, job in enumerate(jobs):
            if not _expired([job]):
                groups[job.group_key()].append(index)
        results = [SKIPPED] * len(jobs)
        for indices in groups.values():
            try:
                images = self._run([jobs[i] for i in indices])
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
        with torch.inference_mode():
            output = self.pipeline(
                prompt=[job.prompt for job in jobs],
                negative_prompt=negative if any(negative) else None,
                image=[Image.fromarray(job.image) for job in jobs],
                mask_image=[Image.fromarray(mask_to_png_array(job.mask)) for job in jobs],
                height=height,
                width=width,
                num_inference_steps=jobs[0].num_inference_steps,
                guidance_scale=jobs[0].guidance_scale,
                generator=[torch.Generator(device).manual_seed(job.seed) for job in jobs],
                output_type="np",
                callback_on_step_end=lambda pipe, step, timestep, tensors: _stop_if_expired(
                    jobs, tensors
                ),
            )
        return [np.clip(np.rint(image * 255), 0, 255).astype(np.uint8) for image in output.images]

    @bentoml.api
    async def status(self) -> dict[str, Any]:
        return self.state.report()


def _stop_if_expired(jobs: list[SdJob], tensors: dict[str, Any]) -> dict[str, Any]:
    """The per-step callback: a call whose every caller has given up stops denoising."""
    if _expired(jobs):
        raise _Expired
    return tensors

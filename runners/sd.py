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
from runners.runtime import ModelRunner, batching, runner_service_config
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
        from runners.fast_paths import prepare_unet

        prepare_unet(self.pipeline, device)
        return {
            "native_resolution": native_resolution(self.pipeline),
            "pipeline": type(self.pipeline).__name__,
            "dtype": "float16" if fp16 else "float32",
        }

    def warm_up(self, device: torch.device) -> None:
        from models.sd_pipeline import native_resolution
        from runners.fast_paths import warm_up_sd

        warm_up_sd(self.pipeline, native_resolution(self.pipeline))

    @bentoml.api(**batching(settings.sd_max_batch_size, settings))
    def inpaint(self, jobs: list[SdJob]) -> list[np.ndarray]:
        """Generated SxSx3 uint8 windows, in the order of `jobs`."""
        self.state.require()
        groups: dict[tuple[int, float, tuple[int, ...]], list[int]] = defaultdict(list)
        for index, job in enumerate(jobs):
            groups[job.group_key()].append(index)
        results: list[np.ndarray | None] = [None] * len(jobs)
        for indices in groups.values():
            for index, image in zip(indices, self._run([jobs[i] for i in indices]), strict=True):
                results[index] = image
        return results  # type: ignore[return-value]

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
            )
        return [np.clip(np.rint(image * 255), 0, 255).astype(np.uint8) for image in output.images]

    @bentoml.api
    def status(self) -> dict[str, Any]:
        return self.state.report()

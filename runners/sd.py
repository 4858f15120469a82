"""Stable Diffusion runner: a diffusers inpainting pipeline (SD 1.x, 2.x or SDXL).

Every window it gets is the pipeline's native square, so a batch is grouped by the
parameters one pipeline call must share (steps, guidance, size) and each group runs as one
call, with one seeded `torch.Generator` per item: an item's pixels do not depend on its
neighbours' seeds.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Annotated, Any

import bentoml
import numpy as np
from pydantic import BaseModel, ConfigDict, WithJsonSchema

from config.settings import get_settings
from models.store import SD_FOLDER, resolve_tags
from runners.runtime import (
    LoadState,
    batching,
    configure_threads,
    model_files,
    runner_service_config,
    select_device,
)
from utils.log_setup import configure_logging
from utils.masks import mask_to_png_array

logger = logging.getLogger("inpaint.runners.sd")
settings = get_settings()
SD_TAG = resolve_tags(settings)["sd"]


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
class SdRunner:
    model_ref = bentoml.models.BentoModel(SD_TAG)

    def __init__(self) -> None:
        configure_logging(settings.log_level)
        self.state = LoadState("sd", SD_TAG)
        try:
            self._load()
        except Exception as exc:  # the runner stays up and reports 503 + the reason
            self.state.fail(exc)

    def _load(self) -> None:
        from models.sd_pipeline import load_inpaint_pipeline, native_resolution

        tag, path, metadata = model_files(self.model_ref)
        device = select_device(settings)
        threads = configure_threads(settings, device)
        fp16 = device.type == "cuda" and settings.sd_fp16_on_cuda
        self.pipeline = load_inpaint_pipeline(path / SD_FOLDER, device, fp16=fp16)
        self.state.tag, self.state.device = tag, device
        self.state.demo = bool(metadata.get("demo"))
        self.state.details = {
            "native_resolution": native_resolution(self.pipeline),
            "pipeline": type(self.pipeline).__name__,
            "dtype": "float16" if fp16 else "float32",
            "torch_threads": threads,
        }
        logger.info("SD %s loaded on %s (%s)", tag, device, self.state.details)

    @bentoml.api(**batching(settings.sd_max_batch_size, settings.batch_max_latency_ms))
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

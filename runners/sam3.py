"""SAM 3 runner: every instance of a concept named in words ("person"), through transformers.

A text query is two halves: the image features (the ViT + FPN neck, the expensive half: seconds
on a CPU at 1008x1008) and the text encoder + DETR detector + mask decoder on top of them. The
runner keeps the newest photos' features by the entry's photo key, so a new word on a photo it
has seen runs the second half only (`vision_runs` in `status` counts the first). The entry asks
by key first and sends the photo only when the runner answers `unknown_features`, like SAM's
`decode`.

Jobs batch adaptively: the photos of a batch that need features go through the vision encoder
together. Each job carries its caller's deadline and a call id the entry `cancel`s; skipped work
answers `skipped`. Heavy forwards hold the host-wide compute lock. The instances are
transformers' own `post_process_instance_segmentation` at the photo's size; masks travel as
packed bits (np.packbits, one row of H*W bits per instance).
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import bentoml
import numpy as np
from pydantic import BaseModel, ConfigDict, WithJsonSchema

from config.settings import get_settings
from models.store import SAM3_FOLDER, resolve_tags
from runners.bookkeeping import CancelledCalls, Counters, KeptByKey
from runners.queue_metrics import RunnerArrivals, model_work_started
from runners.runtime import ModelRunner, batching, expired, run_heavy, runner_service_config

if TYPE_CHECKING:
    import torch

settings = get_settings()
logger = logging.getLogger("inpaint.runners")

Array = Annotated[np.ndarray, WithJsonSchema({"type": "array", "description": "numpy array"})]


class Sam3Job(BaseModel):
    """One text query on one photo: `size` its [height, width]; `image` the HxWx3 uint8 photo
    at that size, or None to use the features kept under `key`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    key: str
    text: str
    size: list[int]
    threshold: float = 0.5
    image: Array | None = None
    deadline: float | None = None
    call_id: str | None = None


def split_features(features: Any, count: int) -> list[Any]:
    """A batch's vision output as `count` outputs of batch size 1 (views, no copies)."""
    from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

    def item(value: Any, i: int) -> Any:
        if value is None:
            return None
        if isinstance(value, tuple):
            return tuple(v[i : i + 1] for v in value)
        return value[i : i + 1]

    fields = ("last_hidden_state", "fpn_hidden_states", "fpn_position_encoding")
    return [
        Sam3VisionEncoderOutput(**{name: item(getattr(features, name), i) for name in fields})
        for i in range(count)
    ]


def instances_of(processor: Any, outputs: Any, threshold: float, size: tuple[int, int]) -> dict:
    """transformers' post-process at the photo's size, as plain arrays (masks bit-packed)."""
    found = processor.post_process_instance_segmentation(
        outputs, threshold=threshold, target_sizes=[size]
    )[0]
    pixels = size[0] * size[1]
    if len(found["scores"]):
        masks = found["masks"].cpu().numpy().astype(bool).reshape(-1, pixels)
    else:  # the post-process leaves an empty result at the model's mask size
        masks = np.zeros((0, pixels), dtype=bool)
    return {
        "scores": found["scores"].float().cpu().numpy(),
        "boxes": found["boxes"].float().cpu().numpy().reshape(-1, 4),
        "masks": np.packbits(masks, axis=1),
        "size": list(size),
    }


def unpack_masks(packed: np.ndarray, size: list[int] | tuple[int, int]) -> np.ndarray:
    """`instances_of`'s masks back as KxHxW bool."""
    height, width = int(size[0]), int(size[1])
    packed = np.asarray(packed, dtype=np.uint8).reshape(-1, (height * width + 7) // 8)
    bits = np.unpackbits(packed, axis=1, count=height * width)
    return bits.reshape(-1, height, width).astype(bool)


@bentoml.service(name="sam3_runner", **runner_service_config(settings))
class Sam3Runner(ModelRunner):
    kind = "sam3"
    model_ref = bentoml.models.BentoModel(resolve_tags(settings)["sam3"])

    def __init__(self) -> None:
        self._counts = Counters(
            "vision_runs",
            "images_encoded",
            "features_reused",
            "text_queries",
            "skipped_expired",
            "skipped_cancelled",
        )
        self._cancelled = CancelledCalls()
        self._kept: KeptByKey[Any] = KeptByKey(settings.sam3_features_kept)
        super().__init__()

    def load(self, path: Path, metadata: dict[str, Any], device: torch.device) -> dict[str, Any]:
        from models.sam3_checkpoint import load_sam3

        self.model, self.processor = load_sam3(path / SAM3_FOLDER, device)
        return {"backend": "eager", "image_size": self.processor.image_processor.size["height"]}

    def warm_up(self, device: torch.device) -> None:
        image = np.zeros((64, 64, 3), dtype=np.uint8)
        self.run_jobs([Sam3Job(key="", text="warm up", size=[64, 64], image=image)], keep=False)

    @bentoml.api(**batching(settings.sam3_max_batch_size, settings))
    def segment(self, jobs: list[Sam3Job]) -> list[dict[str, Any]]:
        """Per job: {"scores", "boxes" (xyxy px), "masks" (packed), "size"}; or
        {"unknown_features": True} (send the image), or {"skipped": True} (deadline passed or
        call cancelled)."""
        self.state.require()
        return self.run_jobs(jobs)

    def run_jobs(self, jobs: list[Sam3Job], *, keep: bool = True) -> list[dict[str, Any]]:
        """`segment`, on the calling thread."""
        import torch

        results: list[dict[str, Any]] = [{"skipped": True}] * len(jobs)
        live = []
        for i, job in enumerate(jobs):
            if self._cancelled.take(job.call_id):
                self._counts.add(skipped_cancelled=1)
                logger.info("SAM 3 call %s skipped: cancelled by its caller", job.call_id)
            elif expired(job.deadline):
                self._counts.add(skipped_expired=1)
            else:
                live.append(i)
        features: dict[int, Any] = {}
        to_encode = []
        for i in live:
            kept = self._kept.get(jobs[i].key)
            if kept is not None:
                features[i] = kept
            elif jobs[i].image is None:
                results[i] = {"unknown_features": True}
            else:
                to_encode.append(i)
        device = self.state.device or torch.device("cpu")
        if to_encode:
            model_work_started(self.kind, "features", len(to_encode))
            pixels = self.processor(images=[jobs[i].image for i in to_encode], return_tensors="pt")[
                "pixel_values"
            ].to(device)
            vision_pass = partial(self.model.get_vision_features, pixel_values=pixels)
            encoded = run_heavy(device, vision_pass)
            self._counts.add(vision_runs=1, images_encoded=len(to_encode))
            for i, item in zip(to_encode, split_features(encoded, len(to_encode)), strict=True):
                features[i] = item
                if keep:
                    self._kept.put(jobs[i].key, item)
        self._counts.add(features_reused=len(features) - len(to_encode))
        for i, vision in features.items():
            results[i] = self._query(jobs[i], vision, device)
        return results

    def _query(self, job: Sam3Job, vision: Any, device: torch.device) -> dict[str, Any]:
        import torch

        model_work_started(self.kind, "query", 1)
        text = self.processor(text=job.text, return_tensors="pt").to(device)
        query = partial(
            self.model,
            vision_embeds=vision,
            input_ids=text["input_ids"],
            attention_mask=text["attention_mask"],
        )
        outputs = run_heavy(device, query)
        self._counts.add(text_queries=1)
        size = (int(job.size[0]), int(job.size[1]))
        with torch.inference_mode():  # outputs are inference tensors
            return instances_of(self.processor, outputs, job.threshold, size)

    @bentoml.api
    async def cancel(self, call_ids: list[str]) -> None:
        """Forget the work of these calls: their callers went away."""
        self._cancelled.add(call_ids)

    @bentoml.api
    async def status(self) -> dict[str, Any]:
        return self.state.report(self._counts.snapshot())


Sam3Runner.add_asgi_middleware(RunnerArrivals)

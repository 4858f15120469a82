"""The entry's side of SAM 3: the instances of a word in a photo, the photo sent only when the
runner does not hold its features (it keeps them by photo key, see runners.sam3)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from api.observe import stage
from config.settings import Settings
from flows.context import Background, RunnerFacts, current_request, request_deadline
from runners.client import call_runner
from runners.embedding_cache import embedding_key
from runners.sam3 import Sam3Job, unpack_masks
from utils.exceptions import ModelNotLoadedException

logger = logging.getLogger("inpaint.sam3")


@dataclass(frozen=True)
class Instances:
    masks: np.ndarray  # KxHxW bool
    boxes: np.ndarray  # Kx4 float, x0 y0 x1 y1 pixels
    scores: np.ndarray  # K float
    cached: bool  # the runner held the photo's features

    def take(self, keep: np.ndarray | list[int]) -> Instances:
        return Instances(self.masks[keep], self.boxes[keep], self.scores[keep], self.cached)


class Sam3Client:
    def __init__(
        self, runner: Any, facts: RunnerFacts, background: Background, settings: Settings
    ) -> None:
        self._runner = runner
        self._facts = facts
        self._background = background
        self._settings = settings

    async def instances(self, image: np.ndarray, text: str, threshold: float) -> Instances:
        """Every instance of `text` scoring above `threshold`, best first, at most
        MAX_TEXT_INSTANCES."""
        report = await self._facts.report("sam3")
        if report["demo"] and self._settings.is_production:
            raise ModelNotLoadedException(
                "selection by words needs SAM 3's weights: this production server has only the "
                "tiny demo SAM 3 (scripts/download_models.sh with HF_TOKEN, or "
                "scripts/import_models.py sam3 --checkpoint DIR)"
            )
        key = await asyncio.to_thread(embedding_key, image, report["tag"])
        job = Sam3Job(
            key=key,
            text=text,
            threshold=threshold,
            size=list(image.shape[:2]),
            deadline=request_deadline(self._settings.processing_timeout_s),
            call_id=uuid.uuid4().hex,
        )
        with stage("mask"):
            found = await self._segment(job)
            cached = not found.get("unknown_features")
            if not cached:
                found = await self._segment(job.model_copy(update={"image": image}))
        if found.get("skipped"):
            raise TimeoutError
        scores = np.asarray(found["scores"], dtype=float)
        order = np.argsort(-scores, kind="stable")[: self._settings.max_text_instances]
        masks = await asyncio.to_thread(unpack_masks, found["masks"], found["size"])
        boxes = np.asarray(found["boxes"], dtype=float).reshape(-1, 4)
        return Instances(masks, boxes, scores, cached).take(order)

    async def _segment(self, job: Sam3Job) -> dict[str, Any]:
        try:
            return (await call_runner(self._runner.to_async.segment, [job]))[0]
        except asyncio.CancelledError:  # the caller went away: the runner may skip it
            logger.info(
                "request %s gave up: cancelling SAM 3 call %s", current_request(), job.call_id
            )
            self._background.run(call_runner(self._runner.to_async.cancel, [job.call_id]))
            raise

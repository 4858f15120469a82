"""LaMa runner: batchable inpainting with the project's own FFC ResNet generator.

Items are HxWx4 uint8 arrays (RGB + mask channel, non-zero = hole). Sizes differ between
requests, so a batch is split into groups of equal padded size (models.lama_inference); a
common padding would make one request's result depend on its batch neighbours.
"""

from __future__ import annotations

import logging
from typing import Any

import bentoml
import numpy as np

from config.settings import get_settings
from models.store import LAMA_FOLDER, resolve_tags
from runners.runtime import (
    LoadState,
    batching,
    configure_threads,
    model_files,
    runner_service_config,
    select_device,
)
from utils.log_setup import configure_logging

logger = logging.getLogger("inpaint.runners.lama")
settings = get_settings()
LAMA_TAG = resolve_tags(settings)["lama"]


@bentoml.service(name="lama_runner", **runner_service_config(settings))
class LamaRunner:
    model_ref = bentoml.models.BentoModel(LAMA_TAG)

    def __init__(self) -> None:
        configure_logging(settings.log_level)
        self.state = LoadState("lama", LAMA_TAG)
        try:
            self._load()
        except Exception as exc:  # the runner stays up and reports 503 + the reason
            self.state.fail(exc)

    def _load(self) -> None:
        from models.lama_checkpoint import load_generator

        tag, path, metadata = model_files(self.model_ref)
        device = select_device(settings)
        threads = configure_threads(settings, device)
        self.generator = load_generator(path / LAMA_FOLDER, device)
        self.state.tag, self.state.device = tag, device
        self.state.demo = bool(metadata.get("demo"))
        self.state.details = {"torch_threads": threads}
        logger.info("LaMa %s loaded on %s (%d torch threads)", tag, device, threads)

    @bentoml.api(**batching(settings.lama_max_batch_size, settings.batch_max_latency_ms))
    def inpaint(self, items: list[np.ndarray]) -> list[np.ndarray]:
        """Inpainted HxWx3 uint8 images for HxWx4 (RGB + mask) items, one batch."""
        from models.lama_inference import inpaint_batch

        self.state.require()
        pairs = [(item[..., :3], item[..., 3]) for item in items]
        return inpaint_batch(self.generator, pairs, self.state.device)

    @bentoml.api
    def status(self) -> dict[str, Any]:
        return self.state.report()

"""LaMa runner: batchable inpainting with the project's own FFC ResNet generator.

Items are HxWx4 uint8 arrays (RGB + mask channel, non-zero = hole). Sizes differ between
requests, so a batch is split into groups of equal padded size (models.lama_inference); a
common padding would make one request's result depend on its batch neighbours.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import bentoml
import numpy as np

from config.settings import get_settings
from models.store import LAMA_FOLDER, resolve_tags
from runners.queue_metrics import RunnerArrivals, model_work_started
from runners.runtime import ModelRunner, batching, compute_slot, runner_service_config

if TYPE_CHECKING:
    import torch

settings = get_settings()


@bentoml.service(name="lama_runner", **runner_service_config(settings))
class LamaRunner(ModelRunner):
    kind = "lama"
    model_ref = bentoml.models.BentoModel(resolve_tags(settings)["lama"])

    def load(self, path: Path, metadata: dict[str, Any], device: torch.device) -> dict[str, Any]:
        import torch

        from models.lama_checkpoint import load_generator
        from runners.fast_paths import fast_forward

        generator = load_generator(path / LAMA_FOLDER, device)
        example = torch.rand(1, 4, 256, 256, device=device)  # any size: H and W stay dynamic
        self.generator, backend = fast_forward(
            "lama",
            generator,
            example,
            path=path,
            device=device,
            threads=self.threads,
            dynamic=[0, 2, 3],
        )
        return {"generator": backend}

    def warm_up(self, device: torch.device) -> None:
        from models.lama_inference import inpaint

        image = np.zeros((256, 256, 3), np.uint8)
        mask = np.zeros((256, 256), np.uint8)
        mask[96:160, 96:160] = 1
        with compute_slot(device):
            inpaint(self.generator, image, mask, device)

    @bentoml.api(**batching(settings.lama_max_batch_size, settings))
    def inpaint(self, items: list[np.ndarray]) -> list[np.ndarray]:
        """Inpainted HxWx3 uint8 images for HxWx4 (RGB + mask) items, one batch."""
        from models.lama_inference import inpaint_batch

        self.state.require()
        model_work_started(self.kind, "inpaint", len(items))
        pairs = [(item[..., :3], item[..., 3]) for item in items]
        with compute_slot(self.state.device):
            return inpaint_batch(self.generator, pairs, self.state.device)

    @bentoml.api
    async def status(self) -> dict[str, Any]:
        return self.state.report()


LamaRunner.add_asgi_middleware(RunnerArrivals)

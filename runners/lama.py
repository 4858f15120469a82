"""LaMa runner: batchable inpainting with the project's own FFC ResNet generator.

Each job is an HxWx4 uint8 array (RGB + mask channel, non-zero = hole) and its caller's
deadline: a job whose deadline has passed when it leaves the queue is skipped, not run for
nobody. Sizes differ between requests, so a batch is split into groups of equal padded size
(models.lama_inference); a common padding would make one request's result depend on its batch
neighbours.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import bentoml
import numpy as np
from pydantic import BaseModel, ConfigDict, WithJsonSchema

from config.settings import get_settings
from models.store import LAMA_FOLDER, resolve_tags
from runners.bookkeeping import Counters
from runners.queue_metrics import RunnerArrivals, model_work_started
from runners.runtime import (
    ModelRunner,
    batching,
    expired,
    run_heavy,
    runner_service_config,
)

if TYPE_CHECKING:
    import torch

settings = get_settings()
Array = Annotated[np.ndarray, WithJsonSchema({"type": "array", "description": "numpy array"})]
SKIPPED = np.zeros((0,), dtype=np.uint8)  # what an expired job gets instead of an image


class LamaJob(BaseModel):
    """One image to inpaint: HxWx4 uint8, RGB + mask channel (non-zero = hole)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    item: Array
    deadline: float | None = None


@bentoml.service(name="lama_runner", **runner_service_config(settings))
class LamaRunner(ModelRunner):
    kind = "lama"
    model_ref = bentoml.models.BentoModel(resolve_tags(settings)["lama"])

    def __init__(self) -> None:
        self._counts = Counters("skipped_expired")
        super().__init__()

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
        run_heavy(device, partial(inpaint, self.generator, image, mask, device))

    @bentoml.api(**batching(settings.lama_max_batch_size, settings))
    def inpaint(self, jobs: list[LamaJob]) -> list[np.ndarray]:
        """Inpainted HxWx3 uint8 images, one per job; `SKIPPED` (an empty array) for a job
        whose deadline has passed."""
        from models.lama_inference import inpaint_batch

        self.state.require()
        live = [i for i, job in enumerate(jobs) if not expired(job.deadline)]
        self._counts.add(skipped_expired=len(jobs) - len(live))
        results = [SKIPPED] * len(jobs)
        if not live:
            return results
        model_work_started(self.kind, "inpaint", len(live))
        pairs = [(jobs[i].item[..., :3], jobs[i].item[..., 3]) for i in live]
        device = self.state.device
        painted = run_heavy(device, partial(inpaint_batch, self.generator, pairs, device))
        for i, image in zip(live, painted, strict=True):
            results[i] = image
        return results

    @bentoml.api
    async def status(self) -> dict[str, Any]:
        return self.state.report(self._counts.snapshot())


LamaRunner.add_asgi_middleware(RunnerArrivals)

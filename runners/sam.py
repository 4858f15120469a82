"""SAM runner: a batchable image encoder and prompt-to-logits decoding.

The entry sends the photo already at SAM's working size (long side 1024, see utils.sam_frame)
and upsamples the decoder's 256x256 logits itself, so the runner never sees nor returns a
full-resolution array. The encoder is the expensive half (seconds on a CPU) and its input is
always 1024x1024 after normalise + pad, so concurrent requests batch well. Decoding (~tens of
ms, on the fastest path for the host: runners.fast_paths.sam_decoder) takes an embedding
from the entry's cache (runners.embedding_cache); the runner also keeps its newest ones by key,
so a click on a photo it has seen sends a key, not 4 MB.

Every call carries the caller's absolute deadline (epoch seconds), and an encoder job its call
id, which the entry `cancel`s when its caller goes away: work whose caller has given up by the
time it leaves the queue is skipped, not run for nobody. `status` is async, so it
runs on the event loop and never waits behind inference in BentoML's one-thread limiter.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import bentoml
import numpy as np
from pydantic import BaseModel, ConfigDict, WithJsonSchema

from config.settings import get_settings
from models.store import resolve_tags
from runners.bookkeeping import CancelledCalls, Counters, KeptByKey
from runners.queue_metrics import RunnerArrivals, model_work_started
from runners.runtime import ModelRunner, batching, expired, runner_service_config
from runners.sam_onnx import DecoderExport
from utils.sam_frame import to_input_box, to_input_coords, to_model_input

if TYPE_CHECKING:
    import torch

settings = get_settings()
logger = logging.getLogger("inpaint.runners")

Array = Annotated[np.ndarray, WithJsonSchema({"type": "array", "description": "numpy array"})]
SKIPPED = np.zeros((0,), dtype=np.float32)  # what a skipped job gets instead of an embedding


class SamJob(BaseModel):
    """One photo to encode: HxWx3 uint8 at SAM's working size (long side 1024)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    image: Array
    deadline: float | None = None
    call_id: str | None = None  # what `cancel` names when the caller goes away
    key: str | None = None  # the embedding's cache key: the runner keeps it for `decode`


class SamPrompt(BaseModel):
    """SAM prompts in original-image pixels."""

    point_coords: list[list[float]] | None = None
    point_labels: list[int] | None = None
    box: list[float] | None = None


@bentoml.service(name="sam_runner", **runner_service_config(settings))
class SamRunner(ModelRunner):
    kind = "sam"
    model_ref = bentoml.models.BentoModel(resolve_tags(settings)["sam"])
    decoder_export = DecoderExport()

    def __init__(self) -> None:
        self._counts = Counters(
            "encoder_runs", "images_encoded", "skipped_expired", "skipped_cancelled"
        )
        self._cancelled = CancelledCalls()
        self._kept: KeptByKey[np.ndarray] = KeptByKey(settings.runner_embeddings_kept)
        self._decoder_thread = ThreadPoolExecutor(1, thread_name_prefix="sam-decode")
        super().__init__()

    def load(self, path: Path, metadata: dict[str, Any], device: torch.device) -> dict[str, Any]:
        from models.sam_checkpoint import SamArchitecture, load_sam

        architecture = SamArchitecture.from_metadata(metadata["architecture"])
        self.model = load_sam(path / metadata["checkpoint_file"], architecture, device)
        from runners.fast_paths import sam_decoder, sam_encoder

        self._encode, encoder = sam_encoder(self.model, path, device, self.threads)
        self._decode, decoder = sam_decoder(self.model, path, device, self.threads)
        return {"model_type": metadata.get("model_type"), "encoder": encoder, "decoder": decoder}

    def warm_up(self, device: torch.device) -> None:
        from runners.fast_paths import warm_up_sam

        warm_up_sam(self.model, self._encode, self._decode, device)

    @bentoml.api(**batching(settings.sam_max_batch_size, settings))
    def embed(self, jobs: list[SamJob]) -> list[np.ndarray]:
        """Image embeddings (256x64x64 float32), one per job; `SKIPPED` (an empty array) for
        a job whose deadline has passed or whose call was cancelled."""
        import torch

        self.state.require()
        cancelled = [i for i, job in enumerate(jobs) if self._cancelled.take(job.call_id)]
        live = [i for i, job in enumerate(jobs) if i not in cancelled and not expired(job.deadline)]
        results = [SKIPPED] * len(jobs)
        for i in cancelled:
            logger.info("SAM call %s skipped: cancelled by its caller", jobs[i].call_id)
        self._counts.add(
            skipped_cancelled=len(cancelled),
            skipped_expired=len(jobs) - len(live) - len(cancelled),
        )
        if not live:
            return results
        model_work_started(self.kind, "embed", len(live))
        device = self.state.device
        with torch.inference_mode():
            batch = torch.from_numpy(np.stack([to_model_input(jobs[i].image) for i in live]))
            batch = batch.to(device)
            features = self._encode(batch)
        self._counts.add(encoder_runs=1, images_encoded=len(live))
        for i, feature in zip(live, features, strict=True):
            results[i] = feature.float().cpu().numpy()
            self._kept.put(jobs[i].key, results[i])
        return results

    @bentoml.api
    async def cancel(self, call_ids: list[str]) -> None:
        """Forget the work of these calls: their callers went away. Queued jobs with these
        ids are skipped; a job already running finishes."""
        self._cancelled.add(call_ids)

    @bentoml.api
    async def decode(
        self,
        embedding_key: str,
        original_size: list[int],
        prompt: SamPrompt,
        embedding: Array | None = None,
        deadline: float | None = None,
    ) -> dict[str, Any]:
        """SAM's 3 candidate low-resolution logits (3x256x256 float32) and predicted IoU
        scores, for the embedding sent or else the one kept under `embedding_key`;
        {"unknown_embedding": True} when none was sent and none is kept, {"expired": True}
        when the deadline has passed. The entry upsamples the logits to masks
        (utils.sam_frame.upsample_masks).

        Decoding has a thread of its own: BentoML runs sync APIs on one shared thread, where
        a click would wait for a whole encoder run of another photo."""
        loop = asyncio.get_running_loop()
        work = functools.partial(
            self.decode_now, embedding_key, original_size, prompt, embedding, deadline
        )
        return await loop.run_in_executor(self._decoder_thread, work)

    def decode_now(
        self,
        embedding_key: str,
        original_size: list[int],
        prompt: SamPrompt,
        embedding: np.ndarray | None = None,
        deadline: float | None = None,
    ) -> dict[str, Any]:
        """`decode`, on the calling thread."""
        import torch

        from models.sam_prompt_decoder import prompt_points

        self.state.require()
        if expired(deadline):
            self._counts.add(skipped_expired=1)
            return {"expired": True}
        if embedding is None:
            embedding = self._kept.get(embedding_key)
            if embedding is None:
                return {"unknown_embedding": True}
        else:
            self._kept.put(embedding_key, embedding)
        model_work_started(self.kind, "decode", 1)
        size = (int(original_size[0]), int(original_size[1]))
        points = None
        if prompt.point_coords:
            points = to_input_coords(prompt.point_coords, size)
        box = to_input_box(prompt.box, size) if prompt.box else None
        coords, labels = prompt_points(points, prompt.point_labels, box)
        device = self.state.device
        with torch.inference_mode():
            low_res, iou = self._decode(
                torch.as_tensor(embedding, device=device)[None],
                torch.from_numpy(coords).to(device),
                torch.from_numpy(labels).to(device),
            )
        return {
            "low_res_logits": low_res[0].float().cpu().numpy(),
            "scores": iou[0].float().cpu().numpy(),
        }

    @bentoml.api
    def decoder_onnx(self) -> np.ndarray:
        """The loaded model's prompt encoder + mask decoder as an ONNX file (uint8 bytes),
        exported on the first call (see runners.sam_onnx)."""
        self.state.require()
        return np.frombuffer(self.decoder_export.get(self.model), dtype=np.uint8)

    @bentoml.api
    async def status(self) -> dict[str, Any]:
        return self.state.report(self._counts.snapshot())


SamRunner.add_asgi_middleware(RunnerArrivals)

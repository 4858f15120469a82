"""The entry's side of SAM: a photo's embedding (one encoder run per photo, however many ask)
and the candidate masks of a prompt, in the photo's frame (utils.sam_frame)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from api.observe import stage
from api.schemas import PromptRequest
from config.settings import Settings
from flows.context import Background, RunnerFacts, current_request, request_deadline
from runners.client import call_runner
from runners.embedding_cache import EmbeddingCache, SingleFlight, embedding_key
from runners.sam import SamJob, SamPrompt
from utils.metrics import count_embedding_cache
from utils.sam_frame import to_working_image, upsample_masks, working_size

logger = logging.getLogger("inpaint.sam")
_KEYS_KEPT = 64  # cache keys of recent uploads (a few dozen bytes each)


@dataclass(frozen=True)
class SamEmbedding:
    key: str  # the embedding cache key
    embedding: np.ndarray  # 256x64x64 float32
    cached: bool  # True when this request did not run the encoder (cache or a shared run)


@dataclass(frozen=True)
class Candidates:
    logits: np.ndarray  # Kx256x256 float32 low-resolution logits
    scores: np.ndarray  # K predicted IoUs
    cached: bool  # the embedding was there already (runner, cache or a shared run)


class _Skipped(Exception):
    """The runner skipped the work: its deadline had passed when it left the queue."""


class SamClient:
    def __init__(
        self,
        runner: Any,
        facts: RunnerFacts,
        cache: EmbeddingCache,
        background: Background,
        settings: Settings,
    ) -> None:
        self._runner = runner
        self._facts = facts
        self.cache = cache
        self._background = background
        self._settings = settings
        self._flights: SingleFlight[str, tuple[np.ndarray, bool]] = SingleFlight()
        self._keys: OrderedDict[int, tuple[weakref.ref[np.ndarray], str]] = OrderedDict()

    async def key_of(self, image: np.ndarray) -> str:
        """The photo's cache key: keyed by the pixels, so a repeat skips the resize. A repeat
        upload of the same bytes is the same (read-only) array (utils.decoded_uploads), whose
        key is remembered rather than hashed again."""
        remembered = self._keys.get(id(image))
        if remembered is not None and remembered[0]() is image:
            return remembered[1]
        tag = (await self._facts.tags(("sam",)))["sam"]
        key = await asyncio.to_thread(embedding_key, image, tag)
        if not image.flags.writeable:  # a kept upload: its pixels cannot change under the key
            self._keys[id(image)] = (weakref.ref(image), key)
            while len(self._keys) > _KEYS_KEPT:
                self._keys.popitem(last=False)
        return key

    async def embedding(self, image: np.ndarray, key: str | None = None) -> SamEmbedding:
        """The photo's SAM embedding: from the cache, or one encoder run per distinct photo
        however many requests ask at once (Redis shares it across replicas)."""
        key = key or await self.key_of(image)

        async def compute() -> tuple[np.ndarray, bool]:
            with stage("cache"):
                cached = await self.cache.get(key)
            if cached is not None:
                return cached, True
            with stage("embed"):
                working = await asyncio.to_thread(to_working_image, image)
                embedding = await self._encode(working, key)
            with stage("cache"):
                await self.cache.put(key, embedding)
            return embedding, False

        while True:
            try:
                (embedding, cached), joined = await self._flights.run(key, compute)
            except _Skipped:
                # The flight's starter gave up and the runner skipped it; ours is still on.
                if time.time() >= self._deadline():
                    raise TimeoutError from None
                continue
            count_embedding_cache(hit=cached or joined)
            return SamEmbedding(key, embedding, cached or joined)

    async def candidates(self, image: np.ndarray, prompt: PromptRequest) -> Candidates:
        """SAM's candidate logits and scores for the prompt. The runner most likely holds the
        photo's embedding (it made it, or was sent it for the previous click), so it is asked
        first by key; the embedding is fetched (cache) or computed only when it does not."""
        key = await self.key_of(image)
        sam_prompt = SamPrompt(
            point_coords=prompt.point_coords, point_labels=prompt.point_labels, box=prompt.box
        )
        with stage("mask"):
            result = await self._decode(key, image, sam_prompt, None)
        if not result.get("unknown_embedding"):
            count_embedding_cache(hit=True)
            cached = True
        else:
            found = await self.embedding(image, key)
            cached = found.cached
            with stage("mask"):
                result = await self._decode(key, image, sam_prompt, found.embedding)
        if result.get("expired"):
            raise TimeoutError
        logits = np.asarray(result["low_res_logits"], dtype=np.float32)
        return Candidates(logits, np.asarray(result["scores"], dtype=float), cached)

    async def _decode(
        self, key: str, image: np.ndarray, prompt: SamPrompt, embedding: np.ndarray | None
    ) -> dict[str, Any]:
        return await call_runner(
            self._runner.to_async.decode,
            embedding_key=key,
            original_size=list(image.shape[:2]),
            prompt=prompt,
            embedding=embedding,
            deadline=self._deadline(),
        )

    async def _encode(self, working: np.ndarray, key: str) -> np.ndarray:
        job = SamJob(image=working, deadline=self._deadline(), call_id=uuid.uuid4().hex, key=key)
        try:
            embedding = (await call_runner(self._runner.to_async.embed, [job]))[0]
        except asyncio.CancelledError:  # every waiter went away: the runner may skip it
            logger.info(
                "request %s gave up: cancelling SAM call %s", current_request(), job.call_id
            )
            self._background.run(call_runner(self._runner.to_async.cancel, [job.call_id]))
            raise
        if embedding.size == 0:
            raise _Skipped
        return embedding

    def _deadline(self) -> float:
        return request_deadline(self._settings.processing_timeout_s)


def candidate_masks(logits: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Kx256x256 SAM logits -> KxHxW bool masks of `image`, as SamPredictor makes them."""
    height, width = image.shape[:2]
    return upsample_masks(logits, working_size(height, width), (height, width))

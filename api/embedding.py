"""The body of `POST /api/v1/embedding`: a photo's SAM image embedding for the browser.

The embedding is the one the routes cache (runners.embedding_cache), sent as float32: float16
would halve the bytes, but measured on the tiny model it flips ~10x more boundary pixels of
the decoded masks than float32's own rounding, so the browser's masks would not match
`/api/v1/segment`'s.
"""

from __future__ import annotations

import base64
from typing import Literal

import numpy as np
from pydantic import Field

from api.schemas import BaseResponse, SegmentMetadata


class EmbeddingResponse(BaseResponse):
    success: Literal[True] = True
    embedding: str = Field(description="base64 of the raw little-endian array")
    dtype: Literal["float16", "float32"]
    shape: list[int] = Field(examples=[[1, 256, 64, 64]])
    input_size: list[int] = Field(description="[h, w] after SAM's resize (long side 1024)")
    original_size: list[int] = Field(description="[H, W] of the photo")
    model: str = Field(description="store tag of the SAM model")
    key: str = Field(description="the embedding cache key of this photo and model")
    metadata: SegmentMetadata


def encode_embedding(embedding: np.ndarray) -> tuple[str, str, list[int]]:
    """(base64, dtype, shape) of a (C, h, w) embedding, with the batch axis the decoder takes."""
    array = np.ascontiguousarray(embedding[None], dtype="<f4")
    return base64.b64encode(array.tobytes()).decode("ascii"), "float32", list(array.shape)

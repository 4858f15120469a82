"""The body of `POST /api/v1/embedding`: a photo's SAM image embedding for the browser.

Two forms of the same array (the one the routes cache, runners.embedding_cache):
- `Accept: application/octet-stream`: the raw little-endian float32 bytes (4 MiB for SAM), with
  what the decoder needs in headers (`X-Embedding-*`, `X-Input-Size`, `X-Original-Size`).
- otherwise JSON, the array as base64 (5.6 MB), for API clients that want one document.

float32 only: float16 would halve the bytes, but measured on the tiny model it flips ~10x more
boundary pixels of the decoded masks than float32's own rounding, so the browser's masks would
not match `/api/v1/segment`'s.
"""

from __future__ import annotations

import base64
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from api.schemas import BaseResponse, SegmentMetadata

BINARY = "application/octet-stream"
# Headers of the binary form; a cross-origin page needs them exposed (CORS).
BINARY_HEADERS = (
    "X-Embedding-Shape",
    "X-Embedding-Dtype",
    "X-Embedding-Bytes",
    "X-Embedding-Key",
    "X-Input-Size",
    "X-Original-Size",
    "X-Model",
    "X-Embedding-Cached",
)


class EmbeddingRequest(BaseModel):
    """What the route negotiated from `Accept` (not a part clients send)."""

    model_config = ConfigDict(extra="forbid")

    form: Literal["json", "binary"] = "json"


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


def wants_binary(accept: str) -> bool:
    return BINARY in accept.lower()


def batched_array(embedding: np.ndarray) -> np.ndarray:
    """The (C, h, w) embedding as the decoder takes it: (1, C, h, w) little-endian float32."""
    return np.ascontiguousarray(embedding[None], dtype="<f4")


def encode_embedding(embedding: np.ndarray) -> tuple[str, str, list[int]]:
    """(base64, dtype, shape) of a (C, h, w) embedding, with the batch axis the decoder takes."""
    array = batched_array(embedding)
    return base64.b64encode(array.tobytes()).decode("ascii"), "float32", list(array.shape)


def binary_embedding(
    embedding: np.ndarray,
    *,
    key: str,
    model: str,
    input_size: list[int],
    original_size: list[int],
    cached: bool,
) -> Response:
    array = batched_array(embedding)
    data = array.tobytes()
    return Response(
        content=data,
        media_type=BINARY,
        headers={
            "X-Embedding-Shape": ",".join(map(str, array.shape)),
            "X-Embedding-Dtype": "float32",
            "X-Embedding-Bytes": str(len(data)),
            "X-Embedding-Key": key,
            "X-Input-Size": ",".join(map(str, input_size)),
            "X-Original-Size": ",".join(map(str, original_size)),
            "X-Model": model,
            "X-Embedding-Cached": str(cached).lower(),
        },
    )

"""embedding: the photo's SAM image embedding, from the cache the routes share, for running
SAM's decoder in the browser: raw bytes or JSON (api.embedding)."""

from __future__ import annotations

import asyncio

from starlette.responses import Response

from api.embedding import EmbeddingRequest, EmbeddingResponse, binary_embedding, encode_embedding
from api.schemas import utc_timestamp
from flows.context import FlowContext
from flows.responses import segment_metadata
from flows.upload import Upload
from utils.sam_frame import working_size


async def embedding(
    ctx: FlowContext, request: EmbeddingRequest, upload: Upload
) -> EmbeddingResponse | Response:
    height, width = upload.image.shape[:2]
    found = await ctx.sam.embedding(upload.image)
    tags = await ctx.facts.tags(("sam",))
    input_size = list(working_size(height, width))
    if request.form == "binary":
        return binary_embedding(
            found.embedding,
            key=found.key,
            model=tags["sam"],
            input_size=input_size,
            original_size=[height, width],
            cached=found.cached,
        )
    data, dtype, shape = await asyncio.to_thread(encode_embedding, found.embedding)
    return EmbeddingResponse(
        request_id="",
        timestamp=utc_timestamp(),
        embedding=data,
        dtype=dtype,
        shape=shape,
        input_size=input_size,
        original_size=[height, width],
        model=tags["sam"],
        key=found.key,
        metadata=await segment_metadata(ctx, "sam", upload.image, found.cached),
    )

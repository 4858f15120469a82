"""`GET /api/v1/sam-decoder.onnx`: the loaded SAM model's decoder for the browser editor.

The SAM runner exports it once (runners.sam_onnx); the entry keeps the file per model tag
and serves it with a content ETag, so a browser revalidates it with one 304.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.errors import error_response, request_id_from
from api.schemas import ErrorResponse
from utils.exceptions import InpaintError

logger = logging.getLogger("inpaint.decoder")

MEDIA_TYPE = "application/octet-stream"


class DecoderFiles:
    """The ONNX file per SAM tag, fetched from the runner once (concurrent first calls share
    the fetch)."""

    def __init__(self, fetch: Callable[[], Awaitable[bytes]]) -> None:
        self._fetch = fetch
        self._files: dict[str, tuple[bytes, str]] = {}
        self._lock = asyncio.Lock()

    async def get(self, tag: str) -> tuple[bytes, str]:
        """(file, ETag) of the decoder of SAM model `tag`."""
        async with self._lock:
            if tag not in self._files:
                data = await self._fetch()
                self._files[tag] = (data, f'"{hashlib.sha256(data).hexdigest()[:32]}"')
            return self._files[tag]


class DecoderSource(Protocol):
    async def decoder_onnx(self) -> tuple[bytes, str]: ...


def decoder_router(service: Callable[[], DecoderSource]) -> APIRouter:
    router = APIRouter(tags=["editor"])

    @router.get(
        "/sam-decoder.onnx",
        response_class=Response,
        responses={
            200: {
                "content": {MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
                "description": "SAM's prompt encoder + mask decoder as ONNX (SamOnnxModel's "
                "interface, return_single_mask=False: 4 masks, the single-mask output first)",
            },
            304: {"description": "If-None-Match matched the current ETag"},
            503: {"model": ErrorResponse, "description": "the SAM model is not loaded"},
        },
    )
    async def sam_decoder(request: Request) -> Response:
        """The loaded SAM model's decoder as ONNX, for onnxruntime(-web)."""
        try:
            data, etag = await service().decoder_onnx()
        except InpaintError as error:
            return error_response(error, request_id_from(dict(request.headers)))
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if etag in (tag.strip() for tag in request.headers.get("if-none-match", "").split(",")):
            return Response(status_code=304, headers=headers)
        return Response(data, media_type=MEDIA_TYPE, headers=headers)

    return router

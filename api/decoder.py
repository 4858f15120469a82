"""`GET /api/v1/sam-decoder.onnx`: the loaded SAM model's decoder for the browser editor.

The SAM runner exports it once (runners.sam_onnx); the entry keeps the file per model tag
and serves it with a content ETag, so a browser revalidates it with one 304.
`?precision=uint8` serves it quantized (onnxruntime's dynamic quantization, uint8 weights of
the MatMul/Gemm layers, as SAM's own web demo ships it), made here once per fp32 file.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from api.errors import error_response, request_id_from
from api.schemas import ErrorResponse
from utils.exceptions import InpaintError, ModelNotLoadedException, ValidationException

logger = logging.getLogger("inpaint.decoder")

MEDIA_TYPE = "application/octet-stream"
PRECISIONS = ("fp32", "uint8")


def etag_of(data: bytes) -> str:
    return f'"{hashlib.sha256(data).hexdigest()[:32]}"'


def quantize_decoder(data: bytes) -> bytes:
    """The fp32 decoder ONNX with its MatMul/Gemm weights as uint8 (dynamic quantization:
    activations are quantized at run time). Convolutions stay fp32: onnxruntime-web has no
    ConvInteger."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:  # a server installed without onnxruntime
        raise ModelNotLoadedException(
            "the uint8 decoder needs onnxruntime on the server; use precision=fp32"
        ) from exc
    with tempfile.TemporaryDirectory(prefix="sam-decoder-") as folder:
        source, target = Path(folder) / "fp32.onnx", Path(folder) / "uint8.onnx"
        source.write_bytes(data)
        quantize_dynamic(
            source,
            target,
            op_types_to_quantize=["MatMul", "Gemm"],
            per_channel=False,
            reduce_range=False,
            weight_type=QuantType.QUInt8,
        )
        return target.read_bytes()


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
                self._files[tag] = (data, etag_of(data))
            return self._files[tag]


class QuantizedFiles:
    """The uint8 decoder per fp32 file (by its ETag), quantized once in a thread."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[bytes, str]] = {}
        self._lock = asyncio.Lock()

    async def get(self, fp32: tuple[bytes, str]) -> tuple[bytes, str]:
        data, etag = fp32
        async with self._lock:
            if etag not in self._files:
                quantized = await asyncio.to_thread(quantize_decoder, data)
                logger.info(
                    "quantized SAM's decoder to uint8: %.1f MB -> %.1f MB",
                    len(data) / 1e6,
                    len(quantized) / 1e6,
                )
                self._files = {etag: (quantized, etag_of(quantized))}  # the latest model only
            return self._files[etag]


class DecoderSource(Protocol):
    async def decoder_onnx(self) -> tuple[bytes, str]: ...


def decoder_router(service: Callable[[], DecoderSource]) -> APIRouter:
    router = APIRouter(tags=["editor"])
    quantized = QuantizedFiles()

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
            422: {"model": ErrorResponse, "description": "an unknown precision"},
            503: {"model": ErrorResponse, "description": "the SAM model is not loaded"},
        },
    )
    async def sam_decoder(
        request: Request,
        precision: str = Query(
            "fp32",
            description="fp32 (exact), or uint8: quantized weights, about a quarter of the "
            "size; its mask agreement with fp32 is in docs/benchmarks.md",
            json_schema_extra={"enum": list(PRECISIONS)},
        ),
    ) -> Response:
        """The loaded SAM model's decoder as ONNX, for onnxruntime(-web)."""
        try:
            if precision not in PRECISIONS:
                raise ValidationException(
                    f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}"
                )
            data, etag = await service().decoder_onnx()
            if precision == "uint8":
                data, etag = await quantized.get((data, etag))
        except InpaintError as error:
            return error_response(error, request_id_from(dict(request.headers)))
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if etag in (tag.strip() for tag in request.headers.get("if-none-match", "").split(",")):
            return Response(status_code=304, headers=headers)
        return Response(data, media_type=MEDIA_TYPE, headers=headers)

    return router

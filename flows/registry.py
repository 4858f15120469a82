"""The flows the service serves: each one's request model, its function, the files it takes,
and whether it is also submitted as a job. The routes, the request guard and the jobs are all
built from this one table."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from api.embedding import EmbeddingRequest
from api.schemas import (
    FillRequest,
    RemoveRequest,
    ReplaceRequest,
    SegmentRequest,
)
from flows.context import FlowContext
from flows.embedding import embedding
from flows.fill import fill
from flows.remove import remove
from flows.replace import replace
from flows.segment import segment
from flows.upload import Upload, decode_upload, parse_request
from utils.exceptions import ValidationException

API_PREFIX = "/api/v1"

FlowFunction = Callable[[FlowContext, Any, Upload], Awaitable[BaseModel]]


@dataclass(frozen=True)
class Flow:
    name: str
    request: type[BaseModel]
    run: FlowFunction
    takes_mask: bool  # a `mask` file may replace SAM's selection
    as_job: bool  # also at /api/v1/jobs/<name>

    @property
    def path(self) -> str:
        return f"{API_PREFIX}/{self.name}"

    @property
    def job_path(self) -> str:
        return f"{API_PREFIX}/jobs/{self.name}"

    @property
    def files(self) -> tuple[str, ...]:
        return ("image", "mask") if self.takes_mask else ("image",)


FLOWS: dict[str, Flow] = {
    flow.name: flow
    for flow in (
        Flow("segment", SegmentRequest, segment, takes_mask=False, as_job=False),
        Flow("remove", RemoveRequest, remove, takes_mask=True, as_job=True),
        Flow("fill", FillRequest, fill, takes_mask=True, as_job=True),
        Flow("replace", ReplaceRequest, replace, takes_mask=True, as_job=True),
        Flow("embedding", EmbeddingRequest, embedding, takes_mask=False, as_job=False),
    )
}
JOB_FLOWS = [flow for flow in FLOWS.values() if flow.as_job]


def guarded_routes() -> dict[str, tuple[str, ...]]:
    """Every multipart route and the file fields it takes (api.guard.RequestGuard)."""
    routes = {flow.path: flow.files for flow in FLOWS.values()}
    routes.update({flow.job_path: flow.files for flow in JOB_FLOWS})
    return routes


async def prepare(
    ctx: FlowContext, flow: Flow, raw_request: Any, image: bytes, masks: Sequence[bytes] = ()
) -> tuple[Any, Upload]:
    """The flow's validated request and the decoded upload."""
    request = parse_request(flow.request, raw_request)
    if len(masks) > 1:
        raise ValidationException("send at most one `mask` file")
    upload = await decode_upload(image, masks[0] if masks else None, ctx.decoded, ctx.settings)
    return request, upload


async def run_flow(
    ctx: FlowContext, name: str, raw_request: Any, image: bytes, masks: Sequence[bytes] = ()
) -> BaseModel:
    """Flow `name` on an encoded upload, from the request JSON to the response body."""
    flow = FLOWS[name]
    request, upload = await prepare(ctx, flow, raw_request, image, masks)
    return await flow.run(ctx, request, upload)

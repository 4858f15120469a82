"""Request and response bodies of the REST API (pydantic v2).

Requests arrive as the JSON `request` part of a multipart form; the service validates them
with these models, so a bad field becomes a 422 with our error body, never BentoML's.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from config.settings import get_settings

# The limits are read once, at import: they are both enforced and published in OpenAPI.
_SETTINGS = get_settings()
# A prompt holds at least one non-whitespace character (searched, Python `re` semantics).
NON_BLANK = r"\S"
OutputFormat = Literal["png", "jpeg", "webp"]
Point = Annotated[list[float], Field(min_length=2, max_length=2)]


def utc_timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- requests ------------------------------------------------------------------------------


class PromptRequest(BaseModel):
    """How to pick the object: SAM prompts (points and/or a box) and the mask to keep."""

    # Strict: JSON's true is not the number 1, nor "5" the integer 5 (as OpenAPI says).
    model_config = ConfigDict(extra="forbid", strict=True)

    point_coords: (
        Annotated[list[Point], Field(min_length=1, max_length=_SETTINGS.max_points)] | None
    ) = Field(
        default=None,
        description="Click points [[x, y], ...] in original-image pixels, inside the image; "
        "a single [x, y] is accepted too.",
        examples=[[[200, 450]]],
    )
    point_labels: list[Annotated[int, Field(ge=0, le=1)]] | None = Field(
        default=None,
        description="1 = object, 0 = background, one per point (so it needs point_coords); "
        "default all 1.",
    )
    box: Annotated[list[float], Field(min_length=4, max_length=4)] | None = Field(
        default=None,
        description="Box prompt: two opposite corners [x0, y0, x1, y1] in original-image "
        "pixels, inside the image (any corner order).",
    )
    mask_index: Annotated[int, Field(ge=0, le=2)] | None = Field(
        default=None, description="Which of SAM's 3 candidate masks to use; null = best score."
    )
    text: Annotated[str, Field(min_length=1, max_length=_SETTINGS.max_text_length)] | None = Field(
        default=None,
        description="Select by words with SAM 3: every instance of this concept, e.g. "
        '"person". With text, points filter the instances: a point labelled 0 removes the '
        "instances it lies on; points labelled 1 keep only the instances they lie on; a box "
        "keeps the instances whose box centre lies in it.",
        examples=["person"],
    )
    instances: Literal["all", "best"] = Field(
        default="all", description="With text: every instance found, or the best-scored one."
    )
    threshold: float = Field(
        default=0.5, ge=0.0, le=1.0, description="With text: the lowest instance score kept."
    )

    @field_validator("point_coords", mode="before")
    @classmethod
    def _single_point_to_list(cls, value: Any) -> Any:
        if (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        ):
            return [value]
        return value

    @field_validator("box")
    @classmethod
    def _box_corners(cls, value: list[float] | None) -> list[float] | None:
        """Any two opposite corners make the same box; SAM wants top-left, bottom-right."""
        if value is None:
            return None
        x0, y0, x1, y1 = value
        return [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]

    @model_validator(mode="after")
    def _check_labels(self) -> PromptRequest:
        if self.point_labels is not None:
            if self.point_coords is None:
                raise ValueError("point_labels given without point_coords")
            if len(self.point_labels) != len(self.point_coords):
                raise ValueError(
                    f"point_labels has {len(self.point_labels)} entries for "
                    f"{len(self.point_coords)} points"
                )
        return self

    @model_validator(mode="after")
    def _text_has_no_candidates(self) -> PromptRequest:
        if self.text is not None and self.mask_index is not None:
            raise ValueError("mask_index picks one of SAM's candidates: not with text")
        if self.text is not None and not self.text.strip():
            raise ValueError("text is blank")
        return self

    @property
    def has_prompt(self) -> bool:
        return self.point_coords is not None or self.box is not None or self.text is not None

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Pydantic's schema, plus the one rule JSON Schema can only spell out case by case:
        as many point_labels as point_coords."""
        schema = super().model_json_schema(*args, **kwargs)
        # oneOf (the cases exclude each other), as BentoML folds a top-level anyOf/allOf away.
        schema["oneOf"] = _labels_match_points(_SETTINGS.max_points)
        return schema


def _labels_match_points(max_points: int) -> list[dict[str, Any]]:
    """No point_labels, or exactly one per point."""
    without = {"properties": {"point_labels": {"type": "null"}}}
    counted = [
        {
            "required": ["point_coords", "point_labels"],
            "properties": {
                "point_coords": {"type": "array", "minItems": n, "maxItems": n},
                "point_labels": {"type": "array", "minItems": n, "maxItems": n},
            },
        }
        for n in range(1, max_points + 1)
    ]
    return [without, *counted]


class SegmentRequest(PromptRequest):
    pass


class InpaintRequest(PromptRequest):
    """Fields shared by the three inpainting flows."""

    dilate_kernel_size: int | None = Field(
        default=None,
        ge=0,
        le=_SETTINGS.max_dilate_kernel_size,
        description="Square dilation kernel applied to the mask; default per flow "
        "(remove 15, fill 50, replace 0).",
    )
    output_format: OutputFormat = Field(
        default="png",
        description="png is lossless: pixels outside `mask` are untouched. jpeg cannot hold "
        "transparency: an image with alpha comes back composited on white.",
    )


class RemoveRequest(InpaintRequest):
    pass


class GenerateRequest(InpaintRequest):
    """Fill and replace: a Stable Diffusion inpainting run driven by a text prompt."""

    text_prompt: str = Field(
        min_length=1,
        max_length=_SETTINGS.max_prompt_length,
        json_schema_extra={"pattern": NON_BLANK},
        description=f"What to paint: 1-{_SETTINGS.max_prompt_length} characters, not only "
        "whitespace.",
    )
    negative_prompt: str | None = Field(
        default=None,
        max_length=_SETTINGS.max_prompt_length,
        description=f"What to avoid: at most {_SETTINGS.max_prompt_length} characters.",
    )
    num_inference_steps: int | None = Field(
        default=None,
        ge=1,
        le=_SETTINGS.max_inference_steps,
        description=f"Default {_SETTINGS.default_inference_steps}.",
    )
    guidance_scale: float | None = Field(
        default=None,
        ge=0.0,
        le=50.0,
        description=f"Default {_SETTINGS.default_guidance_scale:g}.",
    )
    seed: int | None = Field(
        default=None, ge=0, le=2**32 - 1, description="Same seed, same output; null = random."
    )

    @field_validator("text_prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not re.search(NON_BLANK, value):
            raise ValueError("text_prompt must not be empty or only whitespace")
        return value


class FillRequest(GenerateRequest):
    pass


class ReplaceRequest(GenerateRequest):
    pass


# --- responses -----------------------------------------------------------------------------


class BaseResponse(BaseModel):
    success: bool
    request_id: str
    timestamp: str


class ErrorDetail(BaseModel):
    code: str = Field(examples=["validation_error"])
    message: str


class ErrorResponse(BaseResponse):
    success: Literal[False] = False
    error: ErrorDetail


class InpaintMetadata(BaseModel):
    width: int
    height: int
    processing_time_ms: float
    mask_index: int | None = Field(description="null when the caller sent the mask")
    mask_score: float | None
    models: dict[str, str] = Field(description="store tags of the models that ran")
    device: str
    dilate_kernel_size: int
    seed: int | None = None
    strategy: str | None = Field(
        default=None, description="how the image was fed to the model (full, crop, downscale)"
    )


class InpaintResponse(BaseResponse):
    success: Literal[True] = True
    image: str = Field(description="base64 of the result file in `output_format`")
    mask: str = Field(description="base64 PNG, 0/255: the region that was regenerated")
    metadata: InpaintMetadata


class SegmentMetadata(BaseModel):
    width: int
    height: int
    processing_time_ms: float
    models: dict[str, str]
    device: str
    embedding_cached: bool


class SegmentInstance(BaseModel):
    mask: str = Field(description="base64 PNG 0/255, the photo's size")
    box: list[float] = Field(description="[x0, y0, x1, y1] in pixels")
    score: float


class SegmentResponse(BaseResponse):
    success: Literal[True] = True
    masks: list[str] = Field(
        description="SAM's 3 candidates, base64 PNG 0/255; with `text`, the instances' masks"
    )
    scores: list[float]
    best_index: int
    metadata: SegmentMetadata
    # A list, never null: BentoML's Python client cannot read a null array.
    instances: list[SegmentInstance] = Field(
        default_factory=list,
        description="With `text`: each instance found (mask, box, score); empty otherwise",
    )


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    uptime_s: float
    timestamp: str = Field(default_factory=utc_timestamp)


class GpuReadiness(BaseModel):
    name: str
    memory_total_mb: float
    memory_allocated_mb: float


class ModelReadiness(BaseModel):
    loaded: bool
    tag: str
    device: str | None = None
    demo: bool = Field(default=False, description="a tiny random-weight demo model")
    error: str | None = None
    gpu: GpuReadiness | None = None
    process_memory_mb: float | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class RateLimitCapacity(BaseModel):
    capacity: int = Field(description="tokens a caller's bucket holds (RATE_LIMIT_CAPACITY)")
    refill_per_s: float
    costs: dict[str, int] = Field(description="tokens a POST takes, by route (default 1)")


class Capacity(BaseModel):
    """What this server takes at once (flows.capacity); batch clients size themselves by it."""

    max_concurrent_requests: int = Field(
        description="requests holding an image at once; more wait for a slot"
    )
    admission_wait_s: float = Field(
        description="how long a request waits for a slot before a 503 overloaded"
    )
    job_max_running: int = Field(description="jobs running at once; more wait, queued")
    job_max_count: int = Field(description="jobs kept; a submit beyond them is a 503")
    retry_after_s: int = Field(description="the Retry-After of a 503 overloaded")
    rate_limit: RateLimitCapacity | None = Field(description="per caller; null = no limit")
    concurrency: dict[str, int] = Field(
        description="in-flight calls that keep this server busy: `requests` (synchronous "
        "routes) and `jobs` (submitted, not finished)"
    )


class ReadyResponse(BaseModel):
    ready: bool
    problems: list[str] = Field(default_factory=list, description="why not ready")
    notices: list[str] = Field(
        default_factory=list,
        description="what an optional model (SAM 3 unless SAM3_REQUIRED) lacks: not a reason "
        "to be unready, but its requests fail",
    )
    demo_models: bool = Field(description="true when any runner serves a tiny random model")
    models: dict[str, ModelReadiness]
    process_memory_mb: float = Field(description="resident memory of the entry process")
    capacity: Capacity | None = Field(default=None, description="what this server takes at once")
    jobs: dict[str, Any] = Field(
        default_factory=dict,
        description="where jobs live (memory or redis) and whether that store answers; a "
        "Redis whose breaker is open refuses jobs (503) but not the synchronous routes",
    )
    timestamp: str = Field(default_factory=utc_timestamp)

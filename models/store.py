"""The BentoML model store side the server needs: which entries to serve.

Every entry keeps its files in the official layout and describes them in its metadata:

- SAM:   `<entry>/<official file name>.pth` (plain state dict); metadata `architecture`.
- LaMa:  `<entry>/big-lama/config.yaml` + `<entry>/big-lama/models/best.ckpt`.
- SD:    `<entry>/pipeline/` (a diffusers inpainting pipeline folder).
- SAM 3: `<entry>/sam3/` (facebook/sam3's layout: config.json, model.safetensors, processor).

Labels `kind` (sam | lama | sd | sam3) and `demo` ("true" for the tiny random-weight models) let the
server pick the best entry available and say honestly what it runs. Entries are created by
`tooling.model_import` (offline). This module imports no torch at import time: the entry
service uses `resolve_tags` too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import bentoml
from bentoml.exceptions import NotFound

from config.settings import Settings

ModelKind = Literal["sam", "lama", "sd", "sam3"]
MODEL_KINDS: tuple[ModelKind, ...] = ("sam", "lama", "sd", "sam3")

LAMA_FOLDER = "big-lama"
SD_FOLDER = "pipeline"
SAM3_FOLDER = "sam3"
TINY_NAMES: dict[ModelKind, str] = {
    "sam": "sam-tiny",
    "lama": "lama-tiny",
    "sd": "sd-tiny",
    "sam3": "sam3-tiny",
}
DEFAULT_NAMES: dict[ModelKind, str] = {"lama": "big-lama", "sd": "sd-inpainting", "sam3": "sam3"}
# Which real SAM to prefer when the settings name none: the biggest on a GPU, the smallest on
# a CPU (vit_h's encoder takes minutes per image on a laptop CPU).
SAM_PREFERENCE = {"gpu": ("vit_h", "vit_l", "vit_b"), "cpu": ("vit_b", "vit_l", "vit_h")}


def default_sam_name(model_type: str) -> str:
    return f"sam-{model_type}"


def _entries(kind: ModelKind) -> list[bentoml.Model]:
    return [m for m in bentoml.models.list() if m.info.labels.get("kind") == kind]


def _newest(models: Iterable[bentoml.Model]) -> bentoml.Model | None:
    return max(models, key=lambda m: m.info.creation_time, default=None)


def best_entry(kind: ModelKind, *, gpu: bool) -> str | None:
    """The tag of the best entry of `kind` in the store: real weights first, newest first."""
    entries = _entries(kind)
    real = [m for m in entries if m.info.labels.get("demo") != "true"]
    if kind == "sam":
        for model_type in SAM_PREFERENCE["gpu" if gpu else "cpu"]:
            typed = [m for m in real if m.info.metadata.get("model_type") == model_type]
            if chosen := _newest(typed):
                return str(chosen.tag)
    chosen = _newest(real) or _newest(entries)
    return str(chosen.tag) if chosen else None


def host_has_gpu(settings: Settings) -> bool:
    """Whether runners will find an NVIDIA GPU, told without importing torch."""
    if settings.device != "auto":
        return settings.device == "cuda"
    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return False
    return any(Path("/proc/driver/nvidia/gpus").glob("*"))


def resolve_tags(settings: Settings, *, gpu: bool | None = None) -> dict[ModelKind, str]:
    """The tag each runner loads: the setting when given, else the best entry, else tiny."""
    if gpu is None:
        gpu = host_has_gpu(settings)
    explicit: dict[ModelKind, str] = {
        "sam": settings.sam_model,
        "lama": settings.lama_model,
        "sd": settings.sd_model,
        "sam3": settings.sam3_model,
    }
    return {
        kind: explicit[kind] or best_entry(kind, gpu=gpu) or f"{TINY_NAMES[kind]}:latest"
        for kind in MODEL_KINDS
    }


def is_demo_tag(tag: str) -> bool:
    try:
        return bentoml.models.get(tag).info.labels.get("demo") == "true"
    except NotFound:
        return tag.split(":")[0] in TINY_NAMES.values()


def has_entry(tag: str) -> bool:
    try:
        bentoml.models.get(tag)
    except NotFound:
        return False
    return True


def missing_entries(tags: dict[ModelKind, str]) -> dict[ModelKind, str]:
    """The tags of `tags` that the store does not hold."""
    return {kind: tag for kind, tag in tags.items() if not has_entry(tag)}

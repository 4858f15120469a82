"""The BentoML model store side: import checked files, and choose which entries to serve.

Every entry keeps its files in the official layout and describes them in its metadata:

- SAM:   `<entry>/<official file name>.pth` (plain state dict); metadata `architecture`.
- LaMa:  `<entry>/big-lama/config.yaml` + `<entry>/big-lama/models/best.ckpt`.
- SD:    `<entry>/pipeline/` (a diffusers inpainting pipeline folder).

Labels `kind` (sam | lama | sd) and `demo` ("true" for the tiny random-weight models) let the
server pick the best entry available and say honestly what it runs. This module imports no
torch at import time: the entry service uses `resolve_tags` too.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import bentoml
from bentoml.exceptions import NotFound

from config.settings import Settings

ModelKind = Literal["sam", "lama", "sd"]
MODEL_KINDS: tuple[ModelKind, ...] = ("sam", "lama", "sd")

LAMA_FOLDER = "big-lama"
SD_FOLDER = "pipeline"
TINY_NAMES: dict[ModelKind, str] = {"sam": "sam-tiny", "lama": "lama-tiny", "sd": "sd-tiny"}
DEFAULT_NAMES: dict[ModelKind, str] = {"lama": "big-lama", "sd": "sd-inpainting"}
# Which real SAM to prefer when the settings name none: the biggest on a GPU, the smallest on
# a CPU (vit_h's encoder takes minutes per image on a laptop CPU).
SAM_PREFERENCE = {"gpu": ("vit_h", "vit_l", "vit_b"), "cpu": ("vit_b", "vit_l", "vit_h")}


def default_sam_name(model_type: str) -> str:
    return f"sam-{model_type}"


def _create_entry(
    name: str, kind: ModelKind, metadata: dict[str, Any], fill: Any, *, demo: bool
) -> str:
    """Create a store entry, let `fill(path)` write its files, return the tag string."""
    labels = {"kind": kind, "demo": "true" if demo else "false"}
    with bentoml.models.create(name, labels=labels, metadata={**metadata, "demo": demo}) as model:
        fill(Path(model.path))
    return str(model.tag)


def import_sam(checkpoint: Path, model_type: str, name: str | None = None, *, demo=False) -> str:
    """Verify a SAM `.pth` for `model_type` (vit_h | vit_l | vit_b | tiny) and store it."""
    from models.sam_checkpoint import verify_sam_checkpoint

    checkpoint = Path(checkpoint)
    metadata = verify_sam_checkpoint(checkpoint, model_type)
    metadata["checkpoint_file"] = checkpoint.name
    return _create_entry(
        name or default_sam_name(model_type),
        "sam",
        metadata,
        lambda path: shutil.copy2(checkpoint, path / checkpoint.name),
        demo=demo,
    )


def import_lama(
    model_dir: Path, name: str | None = None, *, config: Path | None = None, demo: bool = False
) -> str:
    """Verify a big-lama folder (config.yaml + models/best.ckpt) and store it.

    `config` replaces the folder's own config.yaml (the work order's LAMA_CONFIG_PATH).
    """
    from models.lama_checkpoint import verify_lama_dir

    model_dir = Path(model_dir)
    sources = {
        Path("config.yaml"): Path(config) if config else model_dir / "config.yaml",
        Path("models") / "best.ckpt": model_dir / "models" / "best.ckpt",
    }
    metadata = verify_lama_dir(model_dir, config_file=sources[Path("config.yaml")])

    def fill(path: Path) -> None:
        for relative, source in sources.items():
            (path / LAMA_FOLDER / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, path / LAMA_FOLDER / relative)

    return _create_entry(name or DEFAULT_NAMES["lama"], "lama", metadata, fill, demo=demo)


def import_sd(model_dir: Path, name: str | None = None, *, demo: bool = False) -> str:
    """Verify a diffusers inpainting pipeline folder and store it."""
    from models.sd_pipeline import verify_sd_inpainting_dir

    model_dir = Path(model_dir)
    metadata = verify_sd_inpainting_dir(model_dir)
    return _create_entry(
        name or DEFAULT_NAMES["sd"],
        "sd",
        metadata,
        # .cache holds huggingface_hub's download bookkeeping, not pipeline files.
        lambda path: shutil.copytree(
            model_dir, path / SD_FOLDER, ignore=shutil.ignore_patterns(".cache")
        ),
        demo=demo,
    )


def import_tiny() -> dict[ModelKind, str]:
    """Build the tiny random-weight models in the official formats and store them."""
    from models.tiny import build_tiny_models

    with tempfile.TemporaryDirectory(prefix="inpaint-tiny-") as workdir:
        built = build_tiny_models(Path(workdir))
        return {
            "sam": import_sam(built.sam_checkpoint, "tiny", TINY_NAMES["sam"], demo=True),
            "lama": import_lama(built.lama_dir, TINY_NAMES["lama"], demo=True),
            "sd": import_sd(built.sd_dir, TINY_NAMES["sd"], demo=True),
        }


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


def prepare_serving(settings: Settings) -> dict[ModelKind, str]:
    """The tags to serve, importing the tiny demo models when nothing better is there.

    Raises LookupError when a tag named in the settings is not in the store: a typo or a
    missing download must not silently turn into a demo.
    """
    tags = resolve_tags(settings)
    missing = missing_entries(tags)
    if any(tag.split(":")[0] != TINY_NAMES[kind] for kind, tag in missing.items()):
        named = ", ".join(f"{kind.upper()}_MODEL={tag}" for kind, tag in missing.items())
        raise LookupError(
            f"not in the model store ({named}); run scripts/download_models.sh or "
            "scripts/import_models.py, or unset the variable to use what the store holds"
        )
    if missing:
        import_tiny()
        tags = resolve_tags(settings)
    return tags

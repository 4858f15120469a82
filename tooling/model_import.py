"""Import checked model files into the BentoML model store (offline; honours BENTOML_HOME).

Each import verifies the files against their official layout first (models.*_checkpoint,
models.sd_pipeline), then copies them into a new store entry with the labels and metadata
that `models.store` selects by.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bentoml

from config.settings import Settings
from models.store import (
    DEFAULT_NAMES,
    LAMA_FOLDER,
    SAM3_FOLDER,
    SD_FOLDER,
    TINY_NAMES,
    ModelKind,
    default_sam_name,
    missing_entries,
    resolve_tags,
)


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
        _copy_hub_folder(model_dir, SD_FOLDER),
        demo=demo,
    )


def import_sam3(model_dir: Path, name: str | None = None, *, demo: bool = False) -> str:
    """Verify a SAM 3 folder (facebook/sam3's layout) key by key and store it."""
    from models.sam3_checkpoint import verify_sam3_dir

    model_dir = Path(model_dir)
    metadata = verify_sam3_dir(model_dir)
    return _create_entry(
        name or DEFAULT_NAMES["sam3"],
        "sam3",
        metadata,
        _copy_hub_folder(model_dir, SAM3_FOLDER),
        demo=demo,
    )


def _copy_hub_folder(model_dir: Path, folder: str) -> Callable[[Path], Any]:
    """An entry's fill: `model_dir` copied to `folder` in the entry, without `.cache`
    (huggingface_hub's download bookkeeping, not model files)."""
    return lambda path: shutil.copytree(
        model_dir, path / folder, ignore=shutil.ignore_patterns(".cache")
    )


def import_tiny() -> dict[ModelKind, str]:
    """Build the tiny random-weight models in the official formats and store them."""
    from tooling.tiny import build_tiny_models

    with tempfile.TemporaryDirectory(prefix="inpaint-tiny-") as workdir:
        built = build_tiny_models(Path(workdir))
        return {
            "sam": import_sam(built.sam_checkpoint, "tiny", TINY_NAMES["sam"], demo=True),
            "lama": import_lama(built.lama_dir, TINY_NAMES["lama"], demo=True),
            "sd": import_sd(built.sd_dir, TINY_NAMES["sd"], demo=True),
            "sam3": import_sam3(built.sam3_dir, TINY_NAMES["sam3"], demo=True),
        }


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

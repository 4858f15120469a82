"""Where model files are when the settings do not say: where the download command puts them."""

from __future__ import annotations

from pathlib import Path

from config.settings import Settings


def sam_checkpoint(settings: Settings, model_type: str) -> Path:
    from tooling.download import SAM_CHECKPOINTS

    if settings.sam_checkpoint_path:
        return settings.sam_checkpoint_path
    return settings.models_dir / SAM_CHECKPOINTS[model_type].filename


def lama_dir(settings: Settings) -> Path:
    return settings.lama_checkpoint_path or settings.models_dir / "big-lama"


def sd_dir(settings: Settings) -> Path:
    from tooling.download import sd_dir_for

    return settings.sd_model_path or sd_dir_for(settings.sd_model_id, settings.models_dir)


def sam3_dir(settings: Settings) -> Path:
    from tooling.download import sd_dir_for

    return sd_dir_for(settings.sam3_model_id, settings.models_dir)

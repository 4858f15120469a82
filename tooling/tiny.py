"""Tiny random-weight models in the official file formats, for tests and offline demos.

They run the real code paths (segment_anything, the project's LaMa network, a diffusers
pipeline) at toy sizes; their outputs are noise, and the store labels them `demo`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TinyModels:
    sam_checkpoint: Path
    lama_dir: Path
    sd_dir: Path


def build_tiny_models(workdir: Path, seed: int = 0) -> TinyModels:
    from models.lama_checkpoint import build_tiny_lama_dir
    from models.sam_checkpoint import SAM_ARCHITECTURES, write_random_sam_checkpoint
    from models.sd_pipeline import build_tiny_sd_inpainting_dir

    workdir = Path(workdir)
    return TinyModels(
        sam_checkpoint=write_random_sam_checkpoint(
            workdir / "sam_tiny.pth", SAM_ARCHITECTURES["tiny"], seed=seed
        ),
        lama_dir=build_tiny_lama_dir(workdir / "big-lama-tiny", seed=seed),
        sd_dir=build_tiny_sd_inpainting_dir(workdir / "sd-inpainting-tiny", seed=seed),
    )

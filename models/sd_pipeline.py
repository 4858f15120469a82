"""Stable Diffusion inpainting pipelines: folder verification and offline loading.

A pipeline lives in the model store as an official diffusers folder (`model_index.json` plus
one subfolder per component), exactly what `save_pretrained` writes or a Hub snapshot holds.
SD 1.x/2.x inpainting (`StableDiffusionInpaintPipeline`) and SDXL inpainting
(`StableDiffusionXLInpaintPipeline`) both load through `AutoPipelineForInpainting`.

Decisions:
- Only real inpainting UNets are accepted (in_channels = 2 * latent channels + 1, i.e. 9):
  diffusers also runs a text-to-image UNet (4 channels) in its inpaint pipeline, but then the
  mask only blends latents, the UNet never sees the hole's context, and fills look pasted on.
- The safety checker is never loaded (`safety_checker=None, requires_safety_checker=False`):
  a model server returns the generated pixels; content policy is the operator's concern, and
  the checker would cost a second CLIP model per replica. SDXL pipelines have none.
- Loading never touches the network: the path must be an existing local folder (diffusers
  and transformers then read files only) and `local_files_only=True` is passed as well, so no
  caller needs to set HF_HUB_OFFLINE (huggingface_hub reads it once at import, so setting it
  here would not be reliably scoped anyway).
- `fp16` applies on accelerators only; on the CPU half precision is slow or unsupported for
  several ops, so a CPU load is always float32.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

logger = logging.getLogger(__name__)

# Pipeline class -> is SDXL. Text-to-image classes appear in some community inpainting
# folders; AutoPipelineForInpainting maps them to the inpaint class of the same family.
_PIPELINE_CLASSES: dict[str, bool] = {
    "StableDiffusionInpaintPipeline": False,
    "StableDiffusionPipeline": False,
    "StableDiffusionXLInpaintPipeline": True,
    "StableDiffusionXLPipeline": True,
}
# Listed in some model_index.json files but never loaded here.
_UNUSED_COMPONENTS = frozenset({"safety_checker", "feature_extractor", "image_encoder"})
_WEIGHT_FILE = re.compile(
    r"^(?:diffusion_pytorch_model|model|pytorch_model)"
    r"(?:\.(?P<variant>[A-Za-z0-9_-]+))?\.(?:safetensors|bin)$"
)
_WEIGHT_INDEX = re.compile(
    r"^(?:diffusion_pytorch_model|model|pytorch_model)\.(?:safetensors|bin)\.index"
    r"(?:\.(?P<variant>[A-Za-z0-9_-]+))?\.json$"
)


class SdPipelineError(ValueError):
    """A diffusers folder is not a usable Stable Diffusion inpainting pipeline."""


# --------------------------------------------------------------------------- verification


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SdPipelineError(f"{path}: missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SdPipelineError(f"{path}: unreadable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise SdPipelineError(f"{path}: expected a JSON object")
    return data


def _weight_variants(folder: Path) -> set[str]:
    """Variants with complete weights in `folder` ("" = the default, unsuffixed weights)."""
    variants: set[str] = set()
    for entry in folder.iterdir():
        match = _WEIGHT_FILE.match(entry.name) or _WEIGHT_INDEX.match(entry.name)
        if match and entry.is_file():
            variants.add(match.group("variant") or "")
    return variants


def _check_component(root: Path, name: str) -> tuple[dict[str, Any] | None, set[str] | None]:
    """Check one component folder; return (its config, its weight variants) where it has them."""
    folder = root / name
    if not folder.is_dir():
        raise SdPipelineError(f"{folder}: component folder missing (listed in model_index.json)")
    if name.startswith("scheduler"):
        return _read_json(folder / "scheduler_config.json"), None
    if name.startswith("tokenizer"):
        has_bpe = (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
        if not has_bpe and not (folder / "tokenizer.json").is_file():
            raise SdPipelineError(
                f"{folder}: no tokenizer files (vocab.json + merges.txt, or tokenizer.json)"
            )
        return None, None
    config = _read_json(folder / "config.json")
    variants = _weight_variants(folder)
    if not variants:
        raise SdPipelineError(f"{folder}: no weights (*.safetensors or *.bin)")
    return config, variants


def _choose_variant(variants_by_component: dict[str, set[str]]) -> str:
    """The weights variant every model component has, preferring the default one."""
    common = set.intersection(*variants_by_component.values())
    if "" in common:
        return ""
    if common:
        return "fp16" if "fp16" in common else sorted(common)[0]
    default_missing = sorted(n for n, v in variants_by_component.items() if "" not in v)
    raise SdPipelineError(
        f"no weights variant is complete across components; default weights missing in "
        f"{', '.join(default_missing)} (found: "
        + "; ".join(f"{n}: {sorted(v)}" for n, v in sorted(variants_by_component.items()))
        + ")"
    )


def _square_size(value: Any, where: Path) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, list | tuple) and len(value) == 2 and value[0] == value[1]:
        return int(value[0])
    raise SdPipelineError(f"{where}: unsupported sample_size {value!r} (expected a square size)")


def verify_sd_inpainting_dir(path: Path) -> dict[str, Any]:
    """Check a diffusers inpainting folder from its JSON configs alone; return model metadata.

    Metadata (plain JSON types, for BentoML): pipeline_class, is_sdxl, native_resolution
    (pixels: unet sample_size * vae scale factor), vae_scale_factor, unet_in_channels,
    variant ("" for the default weight files, else e.g. "fp16" when only those exist).
    """
    root = Path(path)
    if not root.is_dir():
        raise SdPipelineError(f"{root}: not a directory")
    index_path = root / "model_index.json"
    index = _read_json(index_path)
    class_name = index.get("_class_name")
    if class_name not in _PIPELINE_CLASSES:
        raise SdPipelineError(
            f"{index_path}: _class_name {class_name!r} is not a Stable Diffusion (XL) "
            f"inpainting pipeline (accepted: {', '.join(_PIPELINE_CLASSES)})"
        )
    is_sdxl = _PIPELINE_CLASSES[class_name]

    listed = [
        name
        for name, value in index.items()
        if not name.startswith("_")
        and isinstance(value, list)
        and len(value) == 2
        and value[0] is not None
        and name not in _UNUSED_COMPONENTS
    ]
    text_encoders = sorted(n for n in listed if n.startswith("text_encoder"))
    tokenizers = sorted(n for n in listed if n.startswith("tokenizer"))
    absent = [n for n in ("unet", "vae", "scheduler") if n not in listed]
    if not text_encoders:
        absent.append("text_encoder")
    if not tokenizers:
        absent.append("tokenizer")
    if absent:
        raise SdPipelineError(f"{index_path}: required component(s) not listed: {absent}")

    configs: dict[str, dict[str, Any]] = {}
    variants: dict[str, set[str]] = {}
    for name in listed:
        config, weight_variants = _check_component(root, name)
        if config is not None:
            configs[name] = config
        if weight_variants is not None:
            variants[name] = weight_variants
    variant = _choose_variant(variants)

    unet, vae = configs["unet"], configs["vae"]
    unet_config_path, vae_config_path = root / "unet" / "config.json", root / "vae" / "config.json"
    latent_channels = int(vae.get("latent_channels", 4))
    in_channels = unet.get("in_channels")
    if in_channels != 2 * latent_channels + 1:
        raise SdPipelineError(
            f"{unet_config_path}: in_channels is {in_channels}, an inpainting UNet takes "
            f"{2 * latent_channels + 1} (latents + mask + masked-image latents); "
            f"this looks like a text-to-image model"
        )
    if unet.get("out_channels", 4) != latent_channels:
        raise SdPipelineError(
            f"{unet_config_path}: out_channels {unet.get('out_channels')} != the VAE's "
            f"latent_channels {latent_channels} ({vae_config_path})"
        )
    cross_dim = unet.get("cross_attention_dim")
    hidden_sizes = [configs[n].get("hidden_size") for n in text_encoders]
    if isinstance(cross_dim, int) and all(isinstance(h, int) for h in hidden_sizes):
        if sum(hidden_sizes) != cross_dim:
            raise SdPipelineError(
                f"{unet_config_path}: cross_attention_dim {cross_dim} != the text encoders' "
                f"hidden sizes {dict(zip(text_encoders, hidden_sizes, strict=True))}"
            )

    block_out_channels = vae.get("block_out_channels")
    if not isinstance(block_out_channels, list) or not block_out_channels:
        raise SdPipelineError(f"{vae_config_path}: block_out_channels missing")
    vae_scale_factor = 2 ** (len(block_out_channels) - 1)
    sample_size = _square_size(unet.get("sample_size"), unet_config_path)
    return {
        "pipeline_class": class_name,
        "is_sdxl": is_sdxl,
        "native_resolution": sample_size * vae_scale_factor,
        "vae_scale_factor": vae_scale_factor,
        "unet_in_channels": in_channels,
        "variant": variant,
    }


# --------------------------------------------------------------------------- loading


def load_inpaint_pipeline(path: Path, device: str | torch.device, fp16: bool) -> DiffusionPipeline:
    """Verify, then load a local inpainting folder, offline, onto `device`, ready to call."""
    from diffusers import AutoPipelineForInpainting

    info = verify_sd_inpainting_dir(path)
    device = torch.device(device)
    dtype = torch.float16 if fp16 and device.type != "cpu" else torch.float32
    if fp16 and dtype is torch.float32:
        logger.info("fp16 requested on %s: loading %s in float32", device, path)
    kwargs: dict[str, Any] = {}
    if not info["is_sdxl"]:
        kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if info["variant"]:
        kwargs["variant"] = info["variant"]
    # `dtype`, not `torch_dtype`: diffusers 0.42 deprecates the latter with a FutureWarning.
    pipe = AutoPipelineForInpainting.from_pretrained(
        str(Path(path).resolve()), local_files_only=True, dtype=dtype, **kwargs
    )
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def native_resolution(pipe: DiffusionPipeline) -> int:
    """The square size in pixels the pipeline's UNet was trained at (512 for SD1.5, 1024 SDXL)."""
    sample_size = pipe.unet.config.sample_size
    if isinstance(sample_size, list | tuple):
        sample_size = max(sample_size)
    return int(sample_size) * int(pipe.vae_scale_factor)

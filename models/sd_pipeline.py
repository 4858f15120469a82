"""Stable Diffusion inpainting pipelines: folder verification, offline loading, tiny models.

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
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
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

TINY_MODEL_MAX_LENGTH = 77
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"
# Words whose BPE merges the tiny tokenizer learns; everything else splits into bytes.
_TINY_WORDS = (
    "a an the of in on with and photo picture painting red green blue white black yellow car "
    "cat dog tree house sky grass road water flower person man woman table chair wall window "
    "field beach mountain snow wooden old new high quality detailed background realistic"
).split()


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


# --------------------------------------------------------------------------- tiny models


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode symbols."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {byte: chr(char) for byte, char in zip(printable, chars, strict=True)}


def _word_merges(words: Iterable[str]) -> list[tuple[str, str]]:
    """Left-to-right merges that make each word (as CLIP sees it: last symbol + </w>) one token."""
    merges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for word in words:
        symbols = [*word[:-1], word[-1] + "</w>"]
        current = symbols[0]
        for symbol in symbols[1:]:
            pair = (current, symbol)
            if pair not in seen:
                seen.add(pair)
                merges.append(pair)
            current += symbol
    return merges


def write_tiny_clip_tokenizer(folder: Path, words: Iterable[str] = _TINY_WORDS) -> int:
    """Write a small byte-level BPE CLIP tokenizer in the official files; return vocab size.

    Layout as on the Hub for SD (vocab.json, merges.txt, tokenizer_config.json,
    special_tokens_map.json) and CLIP's vocabulary order: 256 byte symbols, their </w> forms,
    merge results, then <|startoftext|> and <|endoftext|>.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(_bytes_to_unicode().values())
    merges = _word_merges(words)
    tokens = [*symbols, *(s + "</w>" for s in symbols), *(a + b for a, b in merges), _BOS, _EOS]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    special = {"bos_token": _BOS, "eos_token": _EOS, "unk_token": _EOS, "pad_token": _EOS}
    files = {
        "vocab.json": json.dumps(vocab, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
        "special_tokens_map.json": json.dumps(special, indent=2),
        "tokenizer_config.json": json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": TINY_MODEL_MAX_LENGTH,
                "do_lower_case": True,
                "errors": "replace",
                "add_prefix_space": False,
                **special,
            },
            indent=2,
        ),
    }
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return len(vocab)


def _tiny_pipeline(tokenizer_dir: Path) -> DiffusionPipeline:
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionInpaintPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=9,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=(2, 4),
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=256,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            projection_dim=32,
            max_position_embeddings=TINY_MODEL_MAX_LENGTH,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    # SD 1.x's scheduler settings.
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionInpaintPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_tiny_sd_inpainting_dir(path: Path, seed: int = 0) -> Path:
    """Save a tiny random-weight SD inpainting pipeline (native 256 px) as a diffusers folder.

    Same structure as SD 1.5-inpainting (9-channel UNet, 4-level VAE so the scale factor is
    8, CLIP text encoder and tokenizer), small widths. Deterministic for a seed; the global RNG
    is left untouched. `path` must not exist or be an empty folder; it appears complete or not
    at all.
    """
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path} exists and is not an empty folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        tokenizer_dir = staging / "tokenizer-src"
        write_tiny_clip_tokenizer(tokenizer_dir)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            pipe = _tiny_pipeline(tokenizer_dir)
        out = staging / "pipeline"
        pipe.save_pretrained(out, safe_serialization=True)
        # transformers 5 saves tokenizers as tokenizer.json only; ship the files SD's Hub
        # folders have (vocab.json + merges.txt) so the tiny model loads the same way.
        shutil.rmtree(out / "tokenizer")
        shutil.copytree(tokenizer_dir, out / "tokenizer")
        if path.exists():
            path.rmdir()
        os.replace(out, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path

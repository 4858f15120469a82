"""Tiny random-weight models in the official file formats, for tests and offline demos.

They run the real code paths (segment_anything, the project's LaMa network, a diffusers
pipeline) at toy sizes; their outputs are noise, and the store labels them `demo`. The writers
here also make full-size random checkpoints (scripts/bench.py) in the same formats.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf

from models.lama_checkpoint import (
    GENERATOR_PREFIX,
    PACKAGED_BIG_LAMA_CONFIG,
    checkpoint_path,
    config_path,
)
from models.lama_network import build_generator
from models.sam_checkpoint import SAM_ARCHITECTURES, SamArchitecture, build_sam

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

# ngf 8 keeps a 512x512 forward around 0.3 s on 2 CPU cores (ngf 16: about 0.8 s).
# The tiny SD pipeline's UNet: an inpainting UNet's interface (9 input channels) in two blocks.
TINY_INPAINTING_UNET: dict[str, Any] = {
    "sample_size": 32,
    "in_channels": 9,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": (32, 64),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": (2, 4),
}
TINY_GENERATOR = {"ngf": 8, "n_downsampling": 3, "n_blocks": 2}
# The Lightning release LaMa's code was written for; written into checkpoints we make.
_LIGHTNING_VERSION = "1.2.9"
TINY_MODEL_MAX_LENGTH = 77
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"
# Words whose BPE merges the tiny tokenizer learns; everything else splits into bytes.
_TINY_WORDS = (
    "a an the of in on with and photo picture painting red green blue white black yellow car "
    "cat dog tree house sky grass road water flower person man woman table chair wall window "
    "field beach mountain snow wooden old new high quality detailed background realistic"
).split()


@dataclass(frozen=True)
class TinyModels:
    sam_checkpoint: Path
    lama_dir: Path
    sd_dir: Path
    sam3_dir: Path


def build_tiny_models(workdir: Path, seed: int = 0) -> TinyModels:
    workdir = Path(workdir)
    return TinyModels(
        sam_checkpoint=write_random_sam_checkpoint(
            workdir / "sam_tiny.pth", SAM_ARCHITECTURES["tiny"], seed=seed
        ),
        lama_dir=build_tiny_lama_dir(workdir / "big-lama-tiny", seed=seed),
        sd_dir=build_tiny_sd_inpainting_dir(workdir / "sd-inpainting-tiny", seed=seed),
        sam3_dir=build_tiny_sam3_dir(workdir / "sam3-tiny", seed=seed),
    )


# --- SAM --------------------------------------------------------------------------------------


def write_random_sam_checkpoint(path: Path, arch: SamArchitecture, seed: int = 0) -> Path:
    """Write `arch` with its own random init under `seed`, as an official plain `.pth`.

    Deterministic for a seed; the global RNG state is left untouched. Written atomically.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = build_sam(arch, device="cpu")
    state = {key: value.detach().clone().contiguous() for key, value in sam.state_dict().items()}
    fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(state, tmp_name)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


# --- LaMa -------------------------------------------------------------------------------------


def write_lama_dir(
    model_dir: Path,
    config: dict[str, Any] | DictConfig,
    generator_state: Mapping[str, torch.Tensor],
    extra_state: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write `config.yaml` (interpolations kept as written) and a Lightning-style
    `models/best.ckpt` with `generator.*` + `extra_state` (full keys, e.g. `discriminator.*`)."""
    model_dir = Path(model_dir)
    extra = dict(extra_state or {})
    clashing = sorted(k for k in extra if k.startswith(GENERATOR_PREFIX))
    if clashing:
        raise ValueError(f"extra_state must not hold generator keys: {clashing[:5]}")
    state_dict = {GENERATOR_PREFIX + k: v.detach().cpu() for k, v in generator_state.items()}
    state_dict.update({k: v.detach().cpu() for k, v in extra.items()})
    cfg = config if isinstance(config, DictConfig) else OmegaConf.create(config)
    checkpoint_path(model_dir).parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, config_path(model_dir), resolve=False)
    checkpoint = {
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": _LIGHTNING_VERSION,
        "state_dict": state_dict,
    }
    torch.save(checkpoint, checkpoint_path(model_dir))
    return model_dir


def random_generator_state(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Deterministic random values for every state-dict entry of `model` (which may live on the
    meta device), drawn from a private `torch.Generator`: conv weights U(-1/sqrt(fan_in), ..),
    small biases, BatchNorm statistics near identity."""
    rng = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, ref in model.state_dict().items():
        shape = tuple(ref.shape)
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros(shape, dtype=torch.int64)
            continue
        noise = torch.rand(shape, generator=rng, dtype=torch.float32)
        if key.endswith("running_var"):
            state[key] = 0.5 + noise
        elif len(shape) > 1:
            # Conv2d weight (out, in, kh, kw); ConvTranspose2d stores (in, out, kh, kw).
            fan_in = max(1, shape[1] * shape[2] * shape[3]) if len(shape) == 4 else shape[1]
            state[key] = (noise * 2 - 1) / fan_in**0.5
        elif key.endswith("weight"):  # norm scale
            state[key] = 0.8 + 0.4 * noise
        else:  # biases, norm shifts, running means
            state[key] = (noise * 2 - 1) * 0.1
    return state


def tiny_lama_config() -> DictConfig:
    """The packaged big-lama training config with a small generator (same FFC ratios)."""
    config = OmegaConf.load(PACKAGED_BIG_LAMA_CONFIG)
    assert isinstance(config, DictConfig)
    for key, value in TINY_GENERATOR.items():
        config.generator[key] = value
    return config


def build_tiny_lama_dir(model_dir: Path, seed: int = 0) -> Path:
    """A random-weight LaMa small enough for CPU tests, in exactly the official layout."""
    config = tiny_lama_config()
    generator_config = OmegaConf.to_container(config.generator, resolve=True)
    assert isinstance(generator_config, dict)
    with torch.device("meta"):
        model = build_generator({str(k): v for k, v in generator_config.items()})
    rng = torch.Generator().manual_seed(seed + 1)
    # Stand-ins for the modules the real checkpoint carries besides the generator.
    extra = {
        "discriminator.model0.0.weight": torch.rand((8, 3, 4, 4), generator=rng),
        "discriminator.model0.0.bias": torch.rand((8,), generator=rng),
        "val_evaluator.scores.ssim.window": torch.rand((1, 1, 11, 11), generator=rng),
        "test_evaluator.scores.ssim.window": torch.rand((1, 1, 11, 11), generator=rng),
    }
    return write_lama_dir(model_dir, config, random_generator_state(model, seed), extra)


# --- Stable Diffusion inpainting ----------------------------------------------------------------


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
    unet = UNet2DConditionModel(**TINY_INPAINTING_UNET)
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


# --- SAM 3 ------------------------------------------------------------------------------------

# A 112-pixel, 2-layer, 32-wide SAM 3: every module of the real one (ViT with windowed and global
# attention, FPN neck, CLIP text encoder, geometry encoder, DETR encoder/decoder, mask decoder)
# at toy sizes; one text query on 2 CPU cores takes well under a second.
TINY_SAM3_IMAGE_SIZE = 112


def tiny_sam3_config(vocab_size: int, special: Mapping[str, int]) -> dict[str, Any]:
    """Sam3Config keyword arguments for the tiny SAM 3."""
    small = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
    return {
        "vision_config": {
            "backbone_config": {
                "model_type": "sam3_vit_model",
                **small,
                "num_hidden_layers": 2,
                "image_size": TINY_SAM3_IMAGE_SIZE,
                "patch_size": 14,
                "window_size": 4,
                "global_attn_indexes": [1],
                "pretrain_image_size": 56,
            },
            "fpn_hidden_size": 32,
            "backbone_feature_sizes": [[32, 32], [16, 16], [8, 8]],
        },
        "text_config": {
            "model_type": "clip_text_model",
            **small,
            "vocab_size": vocab_size,
            "projection_dim": 32,
            "num_hidden_layers": 1,
            "max_position_embeddings": 32,
            **special,
        },
        "geometry_encoder_config": {**small, "num_layers": 1},
        "detr_encoder_config": {**small, "num_layers": 1},
        "detr_decoder_config": {**small, "num_layers": 1, "num_queries": 8},
        "mask_decoder_config": {"hidden_size": 32, "num_attention_heads": 2},
    }


def write_random_sam3_dir(
    path: Path,
    config: Mapping[str, Any] | None = None,
    *,
    image_size: int | None = None,
    seed: int = 0,
) -> Path:
    """Write a random-weight SAM 3 in the facebook/sam3 layout (config.json, model.safetensors,
    processor and CLIP tokenizer files). `config=None` is the tiny one; `{}` the full-size
    official architecture. Deterministic for a seed; the global RNG state is left untouched."""
    from transformers import CLIPTokenizer, Sam3Config, Sam3ImageProcessor, Sam3Model, Sam3Processor

    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="sam3-tokenizer-") as tokenizer_dir:
        write_tiny_clip_tokenizer(Path(tokenizer_dir))
        tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
        # transformers 5 saves tokenizer.json only; facebook/sam3 also ships these two.
        path.mkdir(parents=True, exist_ok=True)
        for name in ("vocab.json", "merges.txt"):
            shutil.copy2(Path(tokenizer_dir) / name, path / name)
    special = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if config is None:
        config, image_size = tiny_sam3_config(len(tokenizer), special), TINY_SAM3_IMAGE_SIZE
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Sam3Model(Sam3Config(**config)).eval()
    processor_kwargs: dict[str, Any] = {}
    if image_size is not None:
        mask = model.config.vision_config.backbone_feature_sizes[0]
        processor_kwargs = {
            "size": {"height": image_size, "width": image_size},
            "mask_size": {"height": mask[0], "width": mask[1]},
        }
    processor = Sam3Processor(Sam3ImageProcessor(**processor_kwargs), tokenizer)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def build_tiny_sam3_dir(path: Path, seed: int = 0) -> Path:
    return write_random_sam3_dir(path, seed=seed)

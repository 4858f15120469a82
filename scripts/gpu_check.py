"""What the models cost on a GPU, with full-size random weights built in place (no downloads).

    python scripts/gpu_check.py --out gpu-check.json                 # a CUDA machine, < 8 min
    python scripts/gpu_check.py --device cpu --tiny --out check.json  # CI: the script still works

Measures SAM vit_h image embedding in fp32 and bf16 (mask IoU of bf16 vs fp32 on the example
photos), the bf16 encoder under torch.compile (does it pay?), big-lama at 1024 px (fp32,
channels-last), and an SD-1.5-size inpainting UNet + VAE at 512 px for 50 steps in fp16,
batch 1 vs 4 (random text embeddings: no text encoder). The runners' CUDA paths
(runners.fast_paths.CUDA_BF16 / CUDA_CHANNELS_LAST, SD fp16) follow what it shows.

Imports torch, numpy, segment_anything, diffusers, omegaconf and the project's model modules
only: no bentoml, so it runs where those few wheels are installed next to torch.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.sam_agreement import example_cases, mask_agreement  # noqa: E402
from models.sam_checkpoint import SAM_ARCHITECTURES, build_sam  # noqa: E402
from models.sd_unet import SD15_INPAINTING_UNET  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], Any], device: torch.device, repeats: int) -> dict[str, float]:
    """One untimed warm-up call, then the median and min of `repeats` calls, in ms."""
    run()
    _sync(device)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        _sync(device)
        seconds.append(time.perf_counter() - started)
    return {
        "median_ms": round(statistics.median(seconds) * 1000, 2),
        "min_ms": round(min(seconds) * 1000, 2),
        "runs": repeats,
    }


def check_sam(device: torch.device, tiny: bool, repeats: int, compile_: bool) -> dict[str, Any]:
    arch = SAM_ARCHITECTURES["tiny" if tiny else "vit_h"]
    torch.manual_seed(0)
    sam = build_sam(arch, device=device).eval()
    sam.requires_grad_(False)
    bf16_encoder = copy.deepcopy(sam.image_encoder).to(torch.bfloat16)
    x = torch.randn(1, 3, 1024, 1024, device=device)

    def bf16(inputs: torch.Tensor) -> torch.Tensor:
        return bf16_encoder(inputs.to(torch.bfloat16)).float()

    result: dict[str, Any] = {"architecture": arch.name}
    with torch.inference_mode():
        result["embed_fp32"] = timed(lambda: sam.image_encoder(x), device, repeats)
        result["embed_bf16"] = timed(lambda: bf16(x), device, repeats)
        cases = example_cases(limit=2 if tiny else None)
        ious = mask_agreement(sam, bf16, cases)
    flat = [iou for values in ious.values() for iou in values]
    result["bf16_mask_iou"] = {"mean": round(float(np.mean(flat)), 5), "min": min(flat)}
    result["bf16_mask_iou_per_case"] = ious
    if compile_:
        started = time.perf_counter()
        compiled = torch.compile(bf16_encoder)
        with torch.inference_mode():
            compiled(x.to(torch.bfloat16))
            _sync(device)
            result["compile_s"] = round(time.perf_counter() - started, 1)
            result["embed_bf16_compiled"] = timed(
                lambda: compiled(x.to(torch.bfloat16)), device, repeats
            )
    return result


def _lama_generator(tiny: bool, device: torch.device) -> torch.nn.Module:
    from omegaconf import OmegaConf

    from models.lama_checkpoint import PACKAGED_BIG_LAMA_CONFIG
    from models.lama_network import build_generator
    from tooling.tiny import TINY_GENERATOR

    config = OmegaConf.to_container(
        OmegaConf.load(PACKAGED_BIG_LAMA_CONFIG).generator, resolve=True
    )
    assert isinstance(config, dict)
    if tiny:
        config.update(TINY_GENERATOR)
    torch.manual_seed(0)
    with torch.device(device):
        generator = build_generator({str(k): v for k, v in config.items()})
    return generator.eval().requires_grad_(False)


def check_lama(device: torch.device, tiny: bool, repeats: int) -> dict[str, Any]:
    size = 256 if tiny else 1024
    generator = _lama_generator(tiny, device)
    x = torch.rand(1, 4, size, size, device=device)
    result: dict[str, Any] = {"size": size}
    with torch.inference_mode():
        reference = generator(x)
        result["fp32"] = timed(lambda: generator(x), device, repeats)
        generator.to(memory_format=torch.channels_last)
        channels_last = x.to(memory_format=torch.channels_last)
        result["fp32_channels_last"] = timed(lambda: generator(channels_last), device, repeats)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            result["bf16_autocast"] = timed(lambda: generator(channels_last), device, repeats)
            error = (generator(channels_last).float() - reference).abs().max()
        result["bf16_autocast_max_error"] = round(float(error), 5)
    return result


def _sd_models(tiny: bool, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any, int]:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    if tiny:
        unet_config = dict(
            in_channels=9,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=4,
            sample_size=16,
        )
        vae_config = dict(
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
        )
    else:  # stable-diffusion-v1-5/stable-diffusion-inpainting's unet/ and vae/ configs
        unet_config = SD15_INPAINTING_UNET
        vae_config = dict(
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            sample_size=512,
        )
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**unet_config)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, **vae_config)
    unet = unet.to(dtype=dtype, memory_format=torch.channels_last).eval()
    vae = vae.to(dtype=dtype).eval()
    size = unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1)
    return unet, vae, size


def check_sd(device: torch.device, tiny: bool, steps: int, batches: list[int]) -> dict[str, Any]:
    """The inpainting loop as diffusers runs it: encode the masked image once, `steps` UNet
    calls with classifier-free guidance (2x batch), decode."""
    from diffusers import DDIMScheduler

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    unet, vae, size = _sd_models(tiny, device, dtype)
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    width = unet.config.cross_attention_dim
    result: dict[str, Any] = {"size": size, "steps": steps, "dtype": str(dtype)}

    def generate(batch: int) -> torch.Tensor:
        image = torch.rand(batch, 3, size, size, device=device, dtype=dtype) * 2 - 1
        latent_size = size // 2 ** (len(vae.config.block_out_channels) - 1)
        mask = torch.zeros(batch, 1, latent_size, latent_size, device=device, dtype=dtype)
        mask[..., latent_size // 4 : -latent_size // 4, latent_size // 4 : -latent_size // 4] = 1
        masked = vae.encode(image).latent_dist.mode() * vae.config.scaling_factor
        text = torch.randn(2 * batch, 77, width, device=device, dtype=dtype)
        latents = torch.randn(batch, 4, latent_size, latent_size, device=device, dtype=dtype)
        scheduler.set_timesteps(steps)
        for t in scheduler.timesteps:
            model_input = torch.cat([latents, mask, masked], dim=1).repeat(2, 1, 1, 1)
            noise = unet(model_input, t, encoder_hidden_states=text).sample
            uncond, cond = noise.chunk(2)
            latents = scheduler.step(uncond + 7.5 * (cond - uncond), t, latents).prev_sample
        return vae.decode(latents / vae.config.scaling_factor).sample

    with torch.inference_mode():
        for batch in batches:
            timing = timed(lambda b=batch: generate(b), device, 1)
            timing["per_image_ms"] = round(timing["median_ms"] / batch, 2)
            result[f"batch_{batch}"] = timing
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="small models (CI)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("gpu-check.json"))
    args = parser.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device visible; use --device cpu")
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "tiny": args.tiny,
    }
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 numbers mean fp32
    started = time.perf_counter()
    steps = min(args.steps, 2) if args.tiny else args.steps
    # torch.compile on a CPU needs a C++ toolchain and minutes; the question is a GPU one.
    compile_ = device.type == "cuda" and not args.no_compile
    sections: dict[str, Callable[[], dict[str, Any]]] = {
        "sam": lambda: check_sam(device, args.tiny, args.repeats, compile_),
        "lama": lambda: check_lama(device, args.tiny, args.repeats),
        "sd": lambda: check_sd(device, args.tiny, steps, [1, 4] if not args.tiny else [1, 2]),
    }
    for name, run in sections.items():
        section_started = time.perf_counter()
        try:
            report[name] = run()
        except Exception as exc:  # one failing section must not hide the others' numbers
            report[name] = {"error": f"{type(exc).__name__}: {exc}"}
        report[name]["seconds"] = round(time.perf_counter() - section_started, 1)
        print(f"{name}: {json.dumps(report[name])}", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    report["total_s"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out} in {report['total_s']} s")
    return 1 if any("error" in report[name] for name in sections) else 0


if __name__ == "__main__":
    sys.exit(main())

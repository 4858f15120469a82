"""The runners' side of models.backends: which backend each network gets, from the settings.

Kept apart from the runner classes so that each runner picks its backend in one call.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from config.settings import get_settings
from runners.runtime import compiled_models_dir, run_heavy

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam

    from models.backends import Dynamic, Example

Network = Literal["sam", "sam_decoder", "lama", "sd_unet"]

# Whether bf16 may be the default, from its measured agreement with fp32 (docs/benchmarks.md):
# the SAM encoder's mean mask IoU on the example photos >= 0.98; LaMa's max error within 1/255.
# SAM's mask decoder stays fp32 unless SAM_PRECISION=bf16: the editor previews masks with the
# same decoder in fp32 (ONNX in the browser) on the same embedding, and the mask a user sees
# should be the one /segment returns; fp32 already decodes a click in ~30 ms (bf16: ~19, mask
# IoU 0.995). The SD UNet is a sampler, so its test is numerical health rather than equal
# pixels: within 5% relative RMS of eager fp32 on one guided step and after 5 DDIM steps,
# measured 2.6% and 2.2% on an SD-1.5-size UNet (4.4x faster than eager, 3.7x than fp32).
BF16_DEFAULT_OK: dict[Network, bool] = {
    "sam": True,
    "sam_decoder": False,
    "lama": True,
    "sd_unet": True,
}
# On CUDA (what scripts/gpu_check.py measures): the SAM ViT in bf16; LaMa stays fp32 (its FFTs
# run in fp32 anyway) with channels-last convolutions.
CUDA_BF16: tuple[Network, ...] = ("sam",)
CUDA_CHANNELS_LAST: tuple[Network, ...] = ("lama",)


def store_key(path: Path) -> str:
    """A cache key unique to a store entry: `<name>-<version>` of its folder."""
    return f"{path.parent.name}-{path.name}"


def fast_forward(
    network: Network,
    module: torch.nn.Module,
    example: Example,
    *,
    path: Path,
    device: torch.device,
    threads: int,
    dynamic: Dynamic,
) -> tuple[Any, dict[str, Any]]:
    """`module` or its faster twin for this host (see models.backends.choose_backend), and the
    facts about the choice for /ready."""
    from models.backends import accelerate, choose_backend, cuda_forward

    settings = get_settings()
    backend, precision = {
        "sam": (settings.sam_backend, settings.sam_precision),
        "sam_decoder": (settings.sam_backend, settings.sam_precision),
        "lama": (settings.lama_backend, settings.lama_precision),
        "sd_unet": (settings.sd_backend, settings.sd_precision),
    }[network]
    if device.type == "cuda":
        return cuda_forward(
            module,
            bf16=network in CUDA_BF16 and backend != "eager" and precision != "fp32",
            channels_last=network in CUDA_CHANNELS_LAST,
        )
    choice = choose_backend(backend, precision, device.type, bf16_ok=BF16_DEFAULT_OK[network])
    return accelerate(
        module,
        example,
        choice=choice,
        cache_root=compiled_models_dir(settings),
        tag=f"{network}-{store_key(path)}",
        threads=threads,
        dynamic=dynamic,
    )


def locked(
    forward: Callable[[torch.Tensor], torch.Tensor], device: torch.device
) -> Callable[[torch.Tensor], torch.Tensor]:
    """`forward` as a heavy forward: in the compute slot, at the heavy-work priority
    (runners.runtime.run_heavy)."""

    def run(inputs: torch.Tensor) -> torch.Tensor:
        return run_heavy(device, partial(forward, inputs))

    return run


def sam_encoder(
    sam: Sam, path: Path, device: torch.device, threads: int
) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, Any]]:
    """SAM's image encoder on the fastest path for this host, under the compute lock."""
    import torch

    from models.sam_checkpoint import ReleasedImageEncoder

    size = sam.image_encoder.img_size
    example = torch.zeros(1, 3, size, size, device=device)
    encoder, details = fast_forward(
        "sam", sam.image_encoder, example, path=path, device=device, threads=threads, dynamic=[0]
    )
    if details["backend"] == "openvino":
        # Its converted twin serves every request: the eager weights (most of SAM's memory,
        # 2.5 GB for vit_h) need not stay beside it.
        sam.image_encoder = ReleasedImageEncoder(size)
    return locked(encoder, device), details


def sam_decoder(
    sam: Sam, path: Path, device: torch.device, threads: int
) -> tuple[Callable[..., tuple[torch.Tensor, torch.Tensor]], dict[str, Any]]:
    """SAM's prompt encoder + mask decoder (models.sam_prompt_decoder) on the fastest path
    for this host (SAM_BACKEND / SAM_PRECISION, as the encoder). Not under the compute lock:
    a decoding is tens of milliseconds, and a click should not wait for another request's
    encoder run."""
    import torch

    from models.sam_prompt_decoder import PromptDecoder, prompt_points

    coords, labels = prompt_points([[0.0, 0.0]], None, None)
    encoder = sam.prompt_encoder
    example = (
        torch.zeros(1, encoder.embed_dim, *encoder.image_embedding_size, device=device),
        torch.from_numpy(coords).to(device),
        torch.from_numpy(labels).to(device),
    )
    module = PromptDecoder(sam).eval()
    # The number of prompt points varies; the embedding's shape does not.
    dynamic = ([], [1], [1])
    return fast_forward(
        "sam_decoder", module, example, path=path, device=device, threads=threads, dynamic=dynamic
    )


def warm_up_sam(
    sam: Sam,
    encode: Callable[[torch.Tensor], torch.Tensor],
    decode: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
) -> None:
    """One encoder forward and one mask decoding on a blank image."""
    import torch

    from models.sam_prompt_decoder import prompt_points

    size = sam.image_encoder.img_size
    features = encode(torch.zeros(1, 3, size, size, device=device))
    coords, labels = prompt_points([[size / 2, size / 2]], None, None)
    decode(features, torch.from_numpy(coords).to(device), torch.from_numpy(labels).to(device))


def sd_unet(pipeline: Any, path: Path, device: torch.device, threads: int) -> dict[str, Any]:
    """On the CPU, the pipeline's UNet on the fastest path for this host: its `forward` runs
    the converted network (models.sd_unet). Returns the facts for /ready."""
    import torch

    from models.sd_unet import UNetCore, added_inputs, compiled_forward, example_inputs, unsupported

    unet = pipeline.unet
    if device.type != "cpu":  # prepare_unet's channels-last torch UNet, in the loaded dtype
        precision = "fp16" if unet.dtype == torch.float16 else "fp32"
        return {"backend": f"torch-{device.type}", "precision": precision}
    reason = unsupported(unet)
    if reason is not None:
        return {"backend": "eager", "precision": "fp32", "reason": reason}
    example = example_inputs(unet, pipeline.tokenizer.model_max_length)
    core = UNetCore(unet, added_inputs(unet)).eval()
    dynamic = tuple([0] for _ in example)  # the batch: guidance doubles it, jobs batch
    run, details = fast_forward(
        "sd_unet", core, example, path=path, device=device, threads=threads, dynamic=dynamic
    )
    if details["backend"] == "openvino":
        unet.forward = compiled_forward(unet, run, example)
    return details


def prepare_unet(pipeline: Any, device: torch.device) -> None:
    """On CUDA, channels-last UNet convolutions (diffusers already uses SDPA attention). On
    the CPU, each UNet step holds the compute lock: a SAM encoder or LaMa forward of another
    request slips in between two steps instead of waiting for a whole generation, and never
    runs at the same time as one."""
    if device.type == "cuda":
        import torch

        pipeline.unet.to(memory_format=torch.channels_last)
        return
    forward = pipeline.unet.forward

    def run(*args: Any, **kwargs: Any) -> Any:
        return run_heavy(device, partial(forward, *args, **kwargs))

    pipeline.unet.forward = run


def warm_up_sd(pipeline: Any, size: int) -> None:
    """One denoising step on a blank square at the pipeline's native size."""
    from PIL import Image

    blank = Image.new("RGB", (size, size))
    pipeline(
        prompt="",
        image=blank,
        mask_image=Image.new("L", (size, size), 255),
        height=size,
        width=size,
        num_inference_steps=1,
        output_type="np",
    )

"""A diffusers inpainting pipeline's UNet on a faster backend (models.backends).

The pipeline keeps its torch UNet, whose config, dtype and device diffusers reads; only the
UNet's `forward` is replaced, by one that runs the converted network for the calls it was
converted for: latents at the pipeline's native size, the text encoder's full sequence, any
batch (classifier-free guidance doubles it, the runner batches jobs), SDXL's added
conditions. Any other call (another size, `timestep_cond`, ControlNet residuals, attention
kwargs) runs the torch UNet, so a converted UNet never changes what the pipeline can do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

logger = logging.getLogger("inpaint.sd_unet")

SDXL_ADDED = ("text_embeds", "time_ids")  # SDXL's `added_cond_kwargs`, in input order
SDXL_TIME_IDS = 6  # original size, crop corner, target size (or aesthetic score): 6 numbers
# SD-1.5-inpainting's UNet (its config.json), for measuring at real size with random weights.
SD15_INPAINTING_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 9,
    "out_channels": 4,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
}


class UNetCore(torch.nn.Module):
    """The UNet as a function of tensors only, which is what a converter traces: latents,
    one timestep per batch item, text embeddings, then SDXL's added conditions."""

    def __init__(self, unet: torch.nn.Module, added: tuple[str, ...]) -> None:
        super().__init__()
        self.unet = unet
        self.added = added

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        *added: torch.Tensor,
    ) -> torch.Tensor:
        conditions = dict(zip(self.added, added, strict=True)) or None
        return self.unet(
            sample,
            timestep,
            encoder_hidden_states,
            added_cond_kwargs=conditions,
            return_dict=False,
        )[0]


def added_inputs(unet: torch.nn.Module) -> tuple[str, ...]:
    """The `added_cond_kwargs` names the pipeline passes: SDXL's two, or none (SD 1.x/2.x)."""
    return SDXL_ADDED if unet.config.addition_embed_type == "text_time" else ()


def unsupported(unet: torch.nn.Module) -> str | None:
    """Why this UNet stays on eager (inputs the converted graph does not take), or None."""
    config = unet.config
    if config.time_cond_proj_dim is not None:
        return "the UNet takes timestep_cond (guidance-distilled model)"
    if config.class_embed_type is not None:
        return f"the UNet takes class labels ({config.class_embed_type})"
    if config.addition_embed_type not in (None, "text_time"):
        return f"the UNet takes added conditions of type {config.addition_embed_type}"
    if config.encoder_hid_dim_type is not None:
        return f"the UNet projects its text input ({config.encoder_hid_dim_type})"
    if isinstance(config.sample_size, list | tuple) and len(set(config.sample_size)) != 1:
        return f"non-square sample_size {config.sample_size}"
    return None


def example_inputs(unet: torch.nn.Module, text_length: int, batch: int = 2) -> tuple:
    """What the pipeline passes for one classifier-free-guidance step at the native size;
    conversion keeps every shape but the batch (axis 0 of each input)."""
    config = unet.config
    size = config.sample_size
    size = size[0] if isinstance(size, list | tuple) else size
    inputs = [
        torch.zeros(batch, config.in_channels, size, size),
        torch.full((batch,), 500.0),
        torch.zeros(batch, text_length, config.cross_attention_dim),
    ]
    if added_inputs(unet):
        time_width = SDXL_TIME_IDS * config.addition_time_embed_dim
        text_width = config.projection_class_embeddings_input_dim - time_width
        inputs += [torch.zeros(batch, text_width), torch.zeros(batch, SDXL_TIME_IDS)]
    return tuple(inputs)


def _given(value: Any) -> bool:
    return value is not None and not (isinstance(value, dict | list | tuple) and not value)


def _converted_inputs(
    example: tuple, added: tuple[str, ...], call: tuple[Any, Any, Any], extra: dict[str, Any]
) -> tuple | None:
    """The converted graph's inputs for this call (latents, timesteps, text embeddings, added
    conditions), or None when the graph cannot take it."""
    sample, timestep, hidden = call
    conditions = extra.pop("added_cond_kwargs", None) or {}
    if any(_given(value) for value in extra.values()) or set(conditions) != set(added):
        return None
    tensors = (sample, hidden, *(conditions[name] for name in added))
    templates = (example[0], *example[2:])
    for tensor, template in zip(tensors, templates, strict=True):
        if not isinstance(tensor, torch.Tensor) or tensor.ndim != template.ndim:
            return None
        if tensor.shape[1:] != template.shape[1:] or tensor.shape[0] != sample.shape[0]:
            return None
    steps = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1)
    if steps.numel() == 1:
        steps = steps.expand(sample.shape[0])
    elif steps.numel() != sample.shape[0]:
        return None
    return (sample, steps, *tensors[1:])


def compiled_forward(
    unet: torch.nn.Module, run: Callable[..., torch.Tensor], example: tuple
) -> Callable[..., Any]:
    """A replacement for `unet.forward`: `run` (the converted UNet) where it takes the call,
    the torch UNet otherwise; returns what the torch UNet would (a tuple with
    `return_dict=False`, as diffusers' pipelines ask)."""
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

    eager = unet.forward
    added = added_inputs(unet)
    warned: set[str] = set()

    def forward(
        sample: torch.Tensor,
        timestep: Any,
        encoder_hidden_states: torch.Tensor | None = None,
        *args: Any,
        return_dict: bool = True,
        **extra: Any,
    ) -> Any:
        call = (sample, timestep, encoder_hidden_states)
        inputs = None if args else _converted_inputs(example, added, call, dict(extra))
        if inputs is None:
            key = f"{tuple(sample.shape)} {sorted(k for k, v in extra.items() if _given(v))}"
            if key not in warned:
                warned.add(key)
                logger.warning("UNet call %s not converted: running the torch UNet", key)
            return eager(
                sample, timestep, encoder_hidden_states, *args, return_dict=return_dict, **extra
            )
        noise = run(*inputs).to(sample.dtype)
        return UNet2DConditionOutput(sample=noise) if return_dict else (noise,)

    return forward

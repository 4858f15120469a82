"""SAM architectures, checkpoint verification and loading, and random-weight checkpoints.

A SAM checkpoint is the official format: a `.pth` file holding a *plain* state dict
(`{"image_encoder.patch_embed.proj.weight": tensor, ...}`), as published by Meta and as
`segment_anything.build_sam` loads it. Files that wrap the state dict (`{"model": {...}}`,
`{"state_dict": {...}}`, as training scripts write) are rejected with a message saying so:
the model store holds official files only, so the runners and the verifier see one format.

The network itself is always `segment_anything`'s own (`_build_sam`); only the four encoder
hyper-parameters differ between architectures. The "tiny" architecture keeps SAM's fixed
1024-pixel input, prompt encoder and mask decoder, with a 2-block, 64-wide ViT encoder, so
it exercises every code path of the real models at a fraction of the cost.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from segment_anything.build_sam import _build_sam
from segment_anything.modeling import Sam

_SHOWN_PER_KIND = 5  # keys listed per problem kind in an error message
_SAM_INIT_DEFAULTS = inspect.signature(Sam.__init__).parameters


class ReleasedImageEncoder(torch.nn.Module):
    """Takes the place of a SAM image encoder whose weights were released because a converted
    twin serves it (runners.fast_paths); keeps the `img_size` that SAM's preprocessing and
    prompt frame read."""

    def __init__(self, img_size: int) -> None:
        super().__init__()
        self.img_size = img_size

    def forward(self, *args: Any) -> Any:
        raise RuntimeError("this SAM's eager image encoder was released for a faster backend")


class SamCheckpointError(ValueError):
    """A SAM checkpoint file is unreadable or does not match the expected architecture."""


@dataclass(frozen=True)
class SamArchitecture:
    """The hyper-parameters `segment_anything.build_sam._build_sam` takes."""

    name: str
    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]

    def to_metadata(self) -> dict[str, Any]:
        """Plain JSON types, for BentoML model metadata."""
        return {
            "name": self.name,
            "encoder_embed_dim": self.encoder_embed_dim,
            "encoder_depth": self.encoder_depth,
            "encoder_num_heads": self.encoder_num_heads,
            "encoder_global_attn_indexes": list(self.encoder_global_attn_indexes),
        }

    @classmethod
    def from_metadata(cls, data: Mapping[str, Any]) -> SamArchitecture:
        try:
            arch = cls(
                name=str(data["name"]),
                encoder_embed_dim=int(data["encoder_embed_dim"]),
                encoder_depth=int(data["encoder_depth"]),
                encoder_num_heads=int(data["encoder_num_heads"]),
                encoder_global_attn_indexes=tuple(
                    int(i) for i in data["encoder_global_attn_indexes"]
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"invalid SAM architecture metadata {dict(data)!r}: {exc}") from exc
        if arch.encoder_embed_dim % arch.encoder_num_heads:
            raise ValueError(f"SAM architecture {arch.name!r}: embed dim not divisible by heads")
        if any(not 0 <= i < arch.encoder_depth for i in arch.encoder_global_attn_indexes):
            raise ValueError(f"SAM architecture {arch.name!r}: global attention index out of range")
        return arch


# The first three mirror segment_anything.build_sam's build_sam_vit_{h,l,b}.
SAM_ARCHITECTURES: dict[str, SamArchitecture] = {
    "vit_h": SamArchitecture("vit_h", 1280, 32, 16, (7, 15, 23, 31)),
    "vit_l": SamArchitecture("vit_l", 1024, 24, 16, (5, 11, 17, 23)),
    "vit_b": SamArchitecture("vit_b", 768, 12, 12, (2, 5, 8, 11)),
    "tiny": SamArchitecture("tiny", 64, 2, 2, (1,)),
}


def get_architecture(model_type: str) -> SamArchitecture:
    """The architecture for a model type name; "default" means vit_h, as in the package."""
    key = "vit_h" if model_type == "default" else model_type
    try:
        return SAM_ARCHITECTURES[key]
    except KeyError:
        known = ", ".join(SAM_ARCHITECTURES)
        raise SamCheckpointError(
            f"unknown SAM model type {model_type!r} (known: {known})"
        ) from None


def build_sam(arch: SamArchitecture, device: str | torch.device = "cpu") -> Sam:
    """Segment-anything's own network for `arch`, randomly initialised, in eval mode.

    On the "meta" device nothing is allocated: use it to inspect keys and shapes.
    """
    with torch.device(device):
        sam = _build_sam(
            encoder_embed_dim=arch.encoder_embed_dim,
            encoder_depth=arch.encoder_depth,
            encoder_num_heads=arch.encoder_num_heads,
            encoder_global_attn_indexes=list(arch.encoder_global_attn_indexes),
            checkpoint=None,
        )
    # Sam builds pixel_mean/pixel_std with the legacy torch.Tensor(list), which ignores the
    # default-device context: move them explicitly.
    return sam.to(device).eval()


@functools.cache
def _expected_layout(arch: SamArchitecture) -> tuple[dict[str, tuple[int, ...]], int]:
    """(state-dict key -> shape, number of parameters), from a meta-device build."""
    sam = build_sam(arch, device="meta")
    shapes = {key: tuple(t.shape) for key, t in sam.state_dict().items()}
    return shapes, sum(p.numel() for p in sam.parameters())


def expected_state_dict_shapes(arch: SamArchitecture) -> dict[str, tuple[int, ...]]:
    """The official checkpoint's keys and tensor shapes for `arch` (no allocation)."""
    return dict(_expected_layout(arch)[0])


def num_parameters(arch: SamArchitecture) -> int:
    return _expected_layout(arch)[1]


def _shape_str(shape: tuple[int, ...]) -> str:
    return str(tuple(shape))


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN_PER_KIND])
    more = len(items) - _SHOWN_PER_KIND
    return shown + (f", ... and {more} more" if more > 0 else "")


def _layout_problems(
    state_dict: Mapping[str, torch.Tensor], arch: SamArchitecture
) -> tuple[list[str], list[str], list[str]]:
    expected, _ = _expected_layout(arch)
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    misshapen = [
        f"{key}: expected {_shape_str(shape)}, found {_shape_str(tuple(state_dict[key].shape))}"
        for key, shape in expected.items()
        if key in state_dict and tuple(state_dict[key].shape) != shape
    ]
    return missing, unexpected, misshapen


def matching_architectures(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the known architectures whose layout `state_dict` matches exactly."""
    return [
        name
        for name, arch in SAM_ARCHITECTURES.items()
        if not any(_layout_problems(state_dict, arch))
    ]


def check_sam_state_dict(
    state_dict: Mapping[str, Any], arch: SamArchitecture, source: str = "state dict"
) -> int:
    """Raise SamCheckpointError unless `state_dict` has exactly `arch`'s keys and shapes.

    Works on meta tensors too. Returns the architecture's number of parameters.
    """
    not_tensors = [key for key, value in state_dict.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise SamCheckpointError(f"{source}: values that are not tensors: {_listing(not_tensors)}")
    not_float = [
        f"{key} ({value.dtype})"
        for key, value in state_dict.items()
        if not value.is_floating_point()
    ]
    if not_float:
        raise SamCheckpointError(f"{source}: non-floating-point tensors: {_listing(not_float)}")

    missing, unexpected, misshapen = _layout_problems(state_dict, arch)
    if missing or unexpected or misshapen:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_listing(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
        if misshapen:
            parts.append(f"{len(misshapen)} key(s) with the wrong shape: {_listing(misshapen)}")
        matches = [name for name in matching_architectures(state_dict) if name != arch.name]
        hint = f" (its layout matches SAM {' / '.join(matches)})" if matches else ""
        raise SamCheckpointError(
            f"{source} is not a SAM {arch.name} checkpoint{hint}: " + "; ".join(parts)
        )
    return num_parameters(arch)


def read_sam_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a plain-state-dict `.pth` safely (weights_only), memory-mapped when possible."""
    path = Path(path)
    if not path.is_file():
        raise SamCheckpointError(f"{path}: SAM checkpoint file not found")
    try:
        # mmap keeps verification of a 2.5 GB vit_h file cheap; legacy (pre-zip) files can't.
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise SamCheckpointError(f"{path}: not a readable PyTorch checkpoint: {exc}") from exc
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc2:
            raise SamCheckpointError(f"{path}: not a readable PyTorch checkpoint: {exc2}") from exc2
    except Exception as exc:
        raise SamCheckpointError(f"{path}: not a readable PyTorch checkpoint: {exc}") from exc

    if not isinstance(state, Mapping):
        raise SamCheckpointError(
            f"{path}: expected a state dict (a mapping of names to tensors), "
            f"found {type(state).__name__}"
        )
    for wrapper in ("model", "state_dict"):
        if isinstance(state.get(wrapper), Mapping):
            raise SamCheckpointError(
                f"{path}: the state dict is wrapped under {wrapper!r} (a training checkpoint); "
                f"official SAM checkpoints are plain state dicts: save state[{wrapper!r}] instead"
            )
    bad_keys = [repr(key) for key in state if not isinstance(key, str)]
    if bad_keys:
        raise SamCheckpointError(f"{path}: non-string state dict keys: {_listing(bad_keys)}")
    return dict(state)


def verify_sam_checkpoint(path: Path, model_type: str) -> dict[str, Any]:
    """Check a `.pth` against `model_type`'s architecture; return BentoML model metadata.

    The architecture is built on the meta device, so checking vit_h costs no weight memory.
    """
    arch = get_architecture(model_type)
    state = read_sam_state_dict(path)
    n_params = check_sam_state_dict(state, arch, source=str(path))
    return {
        "model_type": arch.name,
        "architecture": arch.to_metadata(),
        "num_parameters": n_params,
    }


def load_sam(path: Path, arch: SamArchitecture, device: str | torch.device = "cpu") -> Sam:
    """Strictly load a checkpoint into `arch`; eval mode, gradients off."""
    state = read_sam_state_dict(path)
    check_sam_state_dict(state, arch, source=str(path))
    # Built on meta and filled with assign=True: no random init, no second copy of the weights.
    sam = build_sam(arch, device="meta")
    state = {key: value.to(torch.float32) for key, value in state.items()}
    sam.load_state_dict(state, strict=True, assign=True)
    # pixel_mean/pixel_std are non-persistent buffers (not in checkpoints); _build_sam passes
    # Sam's defaults for them.
    for name in ("pixel_mean", "pixel_std"):
        value = torch.tensor(_SAM_INIT_DEFAULTS[name].default, dtype=torch.float32)
        sam.register_buffer(name, value.view(-1, 1, 1), persistent=False)
    leftover = [name for name, t in [*sam.named_parameters(), *sam.named_buffers()] if t.is_meta]
    if leftover:  # a buffer the checkpoint does not carry and the builder left on meta
        raise SamCheckpointError(f"{path}: no values for {_listing(leftover)}")
    sam.to(device).eval()
    sam.requires_grad_(False)
    return sam

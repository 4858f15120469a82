"""LaMa inference with Inpaint-Anything's pre- and post-processing, for one image or many.

Per image (`lama_inpaint.py` in Inpaint-Anything, which calls LaMa's own helpers):
RGB uint8 -> float32 / 255 (no mean/std); mask -> {0, 1}; both padded on the bottom and right
to a multiple of 8 with *reflect* padding (Inpaint-Anything uses LaMa's `pad_tensor_to_modulo`,
i.e. `F.pad(mode="reflect")`; LaMa's own `bin/predict.py` dataset instead uses
`pad_img_to_modulo`, `np.pad(mode="symmetric")`, which repeats the edge pixel: pass
`pad_mode="symmetric"` for that); generator input cat(img * (1 - mask), mask); output (already
sigmoid) composited as mask * pred + (1 - mask) * img; cropped; clip(x * 255, 0, 255) cast to
uint8 (a truncation, as in LaMa).

Images are never padded to a common size to share a batch: the FFC's global Fourier branch sees
the whole padded canvas, so extra padding would change the result. Only images whose padded
sizes are equal run together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn

PAD_MODULO = 8
PadMode = Literal["reflect", "symmetric"]
InpaintItem = tuple[np.ndarray, np.ndarray]


def _ceil_to(value: int, modulo: int) -> int:
    return -(-value // modulo) * modulo


def padded_size(height: int, width: int, min_side: int = 1) -> tuple[int, int]:
    """The canvas an image of this size is run on: each side rounded up to a multiple of 8,
    and at least `min_side` (LaMa itself crashes below that, so no valid result changes)."""
    side_min = _ceil_to(max(1, min_side), PAD_MODULO)
    return max(_ceil_to(height, PAD_MODULO), side_min), max(_ceil_to(width, PAD_MODULO), side_min)


def _validate(index: int, item: object) -> InpaintItem:
    where = f"item {index}"
    if not isinstance(item, tuple | list) or len(item) != 2:
        raise ValueError(f"{where}: expected an (image, mask) pair")
    image, mask = item
    if not isinstance(image, np.ndarray) or not isinstance(mask, np.ndarray):
        raise ValueError(f"{where}: image and mask must be numpy arrays")
    if image.dtype != np.uint8:
        raise ValueError(f"{where}: image must be uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{where}: image must be HxWx3 RGB, got shape {image.shape}")
    if mask.dtype not in (np.uint8, np.bool_):
        raise ValueError(f"{where}: mask must be uint8 or bool, got {mask.dtype}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"{where}: mask shape {mask.shape} != image size {image.shape[:2]}")
    return image, mask


def _pad(array: np.ndarray, size: tuple[int, int], mode: PadMode) -> np.ndarray:
    pad = [(0, size[0] - array.shape[0]), (0, size[1] - array.shape[1])]
    pad += [(0, 0)] * (array.ndim - 2)
    # numpy's "reflect" equals torch's F.pad "reflect" wherever torch accepts the pad width, and
    # keeps reflecting where torch would refuse (tiny images).
    return np.pad(array, pad, mode=mode)


def _generator_dtype(generator: nn.Module) -> torch.dtype:
    for param in generator.parameters():
        return param.dtype
    return torch.float32


def _run_group(
    generator: nn.Module,
    group: list[InpaintItem],
    size: tuple[int, int],
    device: torch.device,
    pad_mode: PadMode,
) -> list[np.ndarray]:
    images = np.stack([_pad(image, size, pad_mode) for image, _ in group])
    masks = np.stack([_pad((mask != 0).astype(np.uint8), size, pad_mode) for _, mask in group])
    img = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div(255.0)
    mask = torch.from_numpy(masks).to(device)[:, None].float()
    net_input = torch.cat([img * (1 - mask), mask], dim=1)
    pred = generator(net_input.to(_generator_dtype(generator))).float()
    inpainted = (mask * pred + (1 - mask) * img).permute(0, 2, 3, 1).cpu().numpy()
    results = []
    for (image, _), out in zip(group, inpainted, strict=True):
        height, width = image.shape[:2]
        results.append(np.clip(out[:height, :width] * 255, 0, 255).astype(np.uint8))
    return results


def inpaint_batch(
    generator: nn.Module,
    items: Sequence[InpaintItem],
    device: torch.device | str,
    *,
    pad_mode: PadMode = "reflect",
    max_batch_size: int | None = None,
) -> list[np.ndarray]:
    """Inpaint each (image HxWx3 uint8 RGB, mask HxW uint8/bool, non-zero = hole) pair.

    Items with the same padded size share forward passes (up to `max_batch_size` at a time);
    results come back in input order, each with its input's size.
    """
    if not isinstance(items, Sequence):
        raise ValueError("items must be a sequence of (image, mask) pairs")
    if pad_mode not in ("reflect", "symmetric"):
        raise ValueError(f"pad_mode must be 'reflect' or 'symmetric', got {pad_mode!r}")
    if max_batch_size is not None and max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    checked = [_validate(i, item) for i, item in enumerate(items)]
    device = torch.device(device)
    min_side = int(getattr(generator, "min_input_side", 1))

    groups: dict[tuple[int, int], list[int]] = {}
    for index, (image, _) in enumerate(checked):
        groups.setdefault(padded_size(*image.shape[:2], min_side), []).append(index)

    results: list[np.ndarray | None] = [None] * len(checked)
    step = max_batch_size or len(checked)
    with torch.inference_mode():
        for size, indices in groups.items():
            for start in range(0, len(indices), step):
                chunk = indices[start : start + step]
                outputs = _run_group(generator, [checked[i] for i in chunk], size, device, pad_mode)
                for index, output in zip(chunk, outputs, strict=True):
                    results[index] = output
    return [r for r in results if r is not None]


def inpaint(
    generator: nn.Module,
    image: np.ndarray,
    mask: np.ndarray,
    device: torch.device | str,
    *,
    pad_mode: PadMode = "reflect",
) -> np.ndarray:
    """Inpaint one image; see `inpaint_batch`."""
    return inpaint_batch(generator, [(image, mask)], device, pad_mode=pad_mode)[0]

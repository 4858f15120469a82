"""The one plan of every inpainting flow: select -> dilate -> window -> run -> paste back.

remove (LaMa), fill and replace (SD) differ only in which region they regenerate, which window
of the image their model sees, and which runner paints it; `paint_region` is the rest, written
once, so the invariant lives here: the output has the input's size, and every pixel outside
the returned region is bit-identical to the input. Array work runs off the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from api.observe import stage
from utils.masks import dilate_mask, invert_mask, paste_masked


class Window(Protocol):
    """Where a model looks (utils.windows: LamaRegion, FillWindow, Letterbox)."""

    @property
    def kind(self) -> str: ...  # metadata.strategy

    def extract(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def restore(self, part: np.ndarray, original_image: np.ndarray) -> np.ndarray: ...


Painter = Callable[[np.ndarray, np.ndarray], Awaitable[np.ndarray]]


@dataclass(frozen=True)
class Painted:
    image: np.ndarray  # the output, the input's size
    region: np.ndarray  # HxW bool: what was regenerated; everything else is the input


def kernel_size(request_kernel: int | None, default: int) -> int:
    """The dilation kernel: the request's, else the flow's default from settings."""
    return default if request_kernel is None else request_kernel


async def region_to_paint(selection: np.ndarray, kernel_size: int, keep_object: bool) -> np.ndarray:
    """The dilated selection, or everything but it (replace keeps the object)."""

    def build() -> np.ndarray:
        dilated = dilate_mask(selection, kernel_size)
        return invert_mask(dilated) if keep_object else dilated

    return await asyncio.to_thread(build)


async def paint_region(
    image: np.ndarray, region: np.ndarray, window: Window, paint: Painter
) -> Painted:
    """Run `paint` on the window's view of (image, region) and paste the region back."""
    part_image, part_mask = await asyncio.to_thread(window.extract, image, region)
    painted = await paint(part_image, part_mask)
    with stage("composite"):
        output = await asyncio.to_thread(
            lambda: paste_masked(image, window.restore(painted, image), region)
        )
    if output.shape != image.shape:  # pragma: no cover - paste_masked refuses other shapes
        raise AssertionError(f"output {output.shape} is not the input's {image.shape}")
    return Painted(output, region)

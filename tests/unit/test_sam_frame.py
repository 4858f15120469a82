"""The entry's SAM geometry equals segment_anything's, bit for bit, without torch in the entry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything.utils.transforms import ResizeLongestSide
from torch.nn import functional as F

from tests.conftest import EXAMPLES_DIR
from utils import sam_frame
from utils.sam_frame import (
    _bilinear_rows,  # noqa: PLC2701 - the kernel itself is the subject
    to_input_box,
    to_input_coords,
    to_model_input,
    to_working_image,
    upsample_masks,
    working_size,
)

SIZES = [(1, 2048), (3, 5000), (5, 20000), (600, 800), (1024, 1024), (1500, 700), (7, 9)]


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_working_size_is_resize_longest_side(height: int, width: int) -> None:
    assert working_size(height, width) == ResizeLongestSide.get_preprocess_shape(
        height, width, 1024
    )


def _preprocess_reference(working: np.ndarray) -> np.ndarray:
    """Sam.preprocess, as segment_anything writes it, on the model's own buffers."""
    from segment_anything import sam_model_registry

    sam = sam_model_registry["vit_b"]()  # random weights: only pixel_mean/std matter here
    pixels = torch.as_tensor(working).permute(2, 0, 1).contiguous()[None]
    with torch.inference_mode():
        return sam.preprocess(pixels)[0].numpy()


def test_model_input_is_sam_preprocess() -> None:
    rng = np.random.default_rng(0)
    working = rng.integers(0, 256, size=(683, 1024, 3), dtype=np.uint8)
    reference = _preprocess_reference(working)
    ours = to_model_input(working)
    assert ours.shape == reference.shape == (3, 1024, 1024)
    np.testing.assert_array_equal(ours, reference)


@pytest.mark.parametrize(("height", "width"), [(600, 800), (1500, 700), (7, 9), (3, 5000)])
def test_prompt_coordinates_are_resize_longest_side(height: int, width: int) -> None:
    transform = ResizeLongestSide(1024)
    points = np.array([[0.0, 0.0], [width * 0.37, height * 0.81], [width, height]])
    box = np.array([width * 0.1, height * 0.2, width * 0.9, height * 0.7])
    np.testing.assert_array_equal(
        to_input_coords(points, (height, width)), transform.apply_coords(points, (height, width))
    )
    np.testing.assert_array_equal(
        to_input_box(box, (height, width)), transform.apply_boxes(box, (height, width))
    )


@pytest.mark.parametrize("name", ["remove/dog.jpg", "fill/sample2.jpeg", "replace/man.jpeg"])
def test_working_image_is_resize_longest_side(name: str) -> None:
    from PIL import Image

    with Image.open(EXAMPLES_DIR / name) as photo:
        image = np.asarray(photo.convert("RGB"))
    np.testing.assert_array_equal(
        to_working_image(image), ResizeLongestSide(1024).apply_image(image)
    )


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ((256, 256), (1024, 1024)),
        ((1024, 768), (4000, 3000)),
        ((683, 1024), (300, 450)),
        ((1, 1024), (3, 5000)),
        ((100, 1024), (101, 999)),
    ],
)
def test_bilinear_is_torch_interpolate_bit_for_bit(
    source: tuple[int, int], target: tuple[int, int]
) -> None:
    image = np.random.default_rng(sum(source)).normal(size=source).astype(np.float32)
    expected = F.interpolate(
        torch.from_numpy(image)[None, None], target, mode="bilinear", align_corners=False
    )[0, 0].numpy()
    np.testing.assert_array_equal(_bilinear_rows(image, target), expected)
    np.testing.assert_array_equal(_bilinear_rows(image, target, slice(1, 3)), expected[1:3])


def _postprocess(logits: np.ndarray, size: tuple[int, int], threshold: float = 0.0) -> np.ndarray:
    """Sam.postprocess_masks(...) > threshold, in torch."""
    input_size = working_size(*size)
    padded = F.interpolate(
        torch.from_numpy(logits)[None], (1024, 1024), mode="bilinear", align_corners=False
    )
    cropped = padded[..., : input_size[0], : input_size[1]]
    upsampled = F.interpolate(cropped, size, mode="bilinear", align_corners=False)[0]
    return (upsampled > threshold).numpy()


def _sam_like(rng: np.random.Generator, count: int = 3) -> np.ndarray:
    """Smooth logits shaped like SAM's: an object's signed distance (~4 logits per low-res
    pixel, clipped to [-30, 20]) plus a gentle wobble."""
    yy, xx = np.mgrid[0:256, 0:256]
    maps = []
    for _ in range(count):
        cy, cx, ry, rx = rng.uniform(40, 130), rng.uniform(40, 200), *rng.uniform(15, 70, 2)
        distance = (1 - np.hypot((yy - cy) / ry, (xx - cx) / rx)) * min(ry, rx)
        wobble = np.kron(rng.normal(size=(16, 16)), np.ones((16, 16)))
        maps.append(np.clip(4 * distance + wobble, -30, 20))
    return np.stack(maps).astype(np.float32)


def _logits(kind: str, seed: int) -> np.ndarray:
    """3x256x256 logit maps that stress the threshold decision in different ways."""
    rng = np.random.default_rng(seed)
    shape = (3, 256, 256)
    if kind == "sam-like":
        return _sam_like(rng)
    if kind == "noise":  # what random weights give: lots of pixels near the threshold
        return rng.normal(size=shape).astype(np.float32)
    if kind == "huge":
        return (rng.normal(size=shape) * 1e30).astype(np.float32)
    if kind == "tiny":
        return (rng.normal(size=shape) * 1e-30).astype(np.float32)
    if kind == "subnormal":  # float32 underflow: products and sums round near 0
        return (rng.normal(size=shape) * 1e-38).astype(np.float32)
    if kind == "ternary":  # exact cancellations: the sign is decided by rounding alone
        return rng.integers(-1, 2, size=shape).astype(np.float32)
    if kind == "ramp":  # a plane through 0: whole columns land within rounding of it
        ramp = (np.arange(256, dtype=np.float32) - np.float32(127.5)) * np.float32(2**-7)
        return np.stack(
            [
                np.broadcast_to(ramp, (256, 256)),
                np.broadcast_to(ramp[:, None], (256, 256)),
                -ramp * ramp[:, None],
            ]
        ).astype(np.float32)
    if kind == "outlier":  # one huge logit widens the tolerance: mostly torch's way
        logits = (rng.normal(size=shape) * 1e-3).astype(np.float32)
        logits[:, 3, 5] = 1e6
        return logits
    if kind == "constant":
        return np.stack(
            [np.zeros((256, 256)), np.ones((256, 256)), np.full((256, 256), -2.5)]
        ).astype(np.float32)
    raise AssertionError(kind)


KINDS = ["sam-like", "noise", "huge", "tiny", "subnormal", "ternary", "ramp", "outlier", "constant"]
# Landscape and portrait, larger and smaller than the working size, and strips.
UPSAMPLE_SIZES = [
    (534, 800),
    (800, 534),
    (1500, 700),
    (333, 1024),
    (40, 90),
    (7, 9),
    (1, 2048),
    (3, 5000),
    (5000, 3),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("height", "width"), UPSAMPLE_SIZES)
def test_upsampled_masks_are_sam_postprocess_masks(kind: str, height: int, width: int) -> None:
    logits = _logits(kind, height * width)
    np.testing.assert_array_equal(
        upsample_masks(logits, working_size(height, width), (height, width)),
        _postprocess(logits, (height, width)),
    )


@pytest.mark.parametrize("threshold", [-2.5, -1.0, 0.25, 1.0, 3.0])
@pytest.mark.parametrize("kind", ["sam-like", "noise", "ternary", "constant"])
def test_any_threshold_is_torchs(kind: str, threshold: float) -> None:
    logits = _logits(kind, 7)
    size = (600, 451)
    np.testing.assert_array_equal(
        upsample_masks(logits, working_size(*size), size, threshold),
        _postprocess(logits, size, threshold),
    )


@pytest.mark.parametrize("kind", ["sam-like", "noise", "ramp", "outlier"])
@pytest.mark.parametrize(("height", "width"), [(1500, 700), (640, 2000), (99, 1500)])
def test_row_bands_are_torchs(
    monkeypatch: pytest.MonkeyPatch, kind: str, height: int, width: int
) -> None:
    """A large photo is worked on in row bands (torch's weights for the height, then OpenCV for
    the width); small bands here make every photo take that path."""
    monkeypatch.setattr(sam_frame, "_BAND_PIXELS", 20_000)
    logits = _logits(kind, width)
    np.testing.assert_array_equal(
        upsample_masks(logits, working_size(height, width), (height, width)),
        _postprocess(logits, (height, width)),
    )


@pytest.mark.parametrize("kind", ["noise", "ternary"])
@pytest.mark.parametrize(("height", "width"), [(534, 800), (1500, 700), (40, 90), (7, 9)])
def test_recomputing_from_the_whole_first_resize_is_torchs(
    monkeypatch: pytest.MonkeyPatch, kind: str, height: int, width: int
) -> None:
    """Once enough pixels are recomputed, the first resize is done whole (only the cells the
    second reads) and read at each pixel; here from the first pixel on."""
    monkeypatch.setattr(sam_frame, "_WHOLE_FIRST", 1 << 40)
    logits = _logits(kind, height + width)
    np.testing.assert_array_equal(
        upsample_masks(logits, working_size(height, width), (height, width)),
        _postprocess(logits, (height, width)),
    )


def test_a_large_photo_is_torchs() -> None:
    logits = _logits("sam-like", 3)
    size = (3000, 2250)
    np.testing.assert_array_equal(
        upsample_masks(logits, working_size(*size), size), _postprocess(logits, size)
    )


def test_non_finite_logits_are_torchs() -> None:
    logits = _logits("sam-like", 5)
    logits[0, 40, 50], logits[1, 60:62, 70], logits[2, 10, 10] = np.nan, np.inf, -np.inf
    size = (534, 800)
    np.testing.assert_array_equal(
        upsample_masks(logits, working_size(*size), size), _postprocess(logits, size)
    )


def _recomputed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pixels each mask had computed torch's way, as upsample_masks runs."""
    counts: list[int] = []
    upsample = sam_frame._upsample

    def counting(*args: object) -> int:
        counts.append(upsample(*args))
        return counts[-1]

    monkeypatch.setattr(sam_frame, "_upsample", counting)
    return counts


@pytest.mark.parametrize(("height", "width"), [(534, 800), (3000, 2250)])
def test_smooth_logits_take_the_fast_path(
    monkeypatch: pytest.MonkeyPatch, height: int, width: int
) -> None:
    """SAM's logits are smooth: only a thin seam along each mask's edge is recomputed."""
    counts = _recomputed(monkeypatch)
    logits = _logits("sam-like", 11)
    masks = upsample_masks(logits, working_size(height, width), (height, width))
    np.testing.assert_array_equal(masks, _postprocess(logits, (height, width)))
    assert len(counts) == 3
    assert 0 < max(counts) < 0.01 * height * width


def test_crowded_bands_are_computed_torchs_way(monkeypatch: pytest.MonkeyPatch) -> None:
    counts = _recomputed(monkeypatch)
    logits = _logits("outlier", 1)
    size = (534, 800)
    np.testing.assert_array_equal(
        upsample_masks(logits, working_size(*size), size), _postprocess(logits, size)
    )
    assert counts == [size[0] * size[1]] * 3

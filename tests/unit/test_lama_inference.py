"""LaMa pre/post-processing and size-grouped batching, on the tiny random-weight LaMa."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from models.lama_checkpoint import load_generator
from models.lama_inference import inpaint, inpaint_batch, padded_size
from models.lama_network import FFCResNetGenerator
from tooling.tiny import build_tiny_lama_dir


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> FFCResNetGenerator:
    return load_generator(build_tiny_lama_dir(tmp_path_factory.mktemp("lama") / "big-lama"))


def make_item(height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[height // 4 : height // 2 + 2, width // 5 : width // 2 + 3] = 255
    return image, mask


class Recorder(nn.Module):
    """A stand-in generator: remembers its input and predicts a constant."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.clone())
        return torch.full((x.shape[0], 3, *x.shape[2:]), self.value)


def test_padded_size() -> None:
    assert padded_size(37, 53) == (40, 56)
    assert padded_size(64, 8) == (64, 8)
    assert padded_size(5, 70, min_side=16) == (16, 72)


def test_odd_size_keeps_shape_and_known_pixels(generator: FFCResNetGenerator) -> None:
    image, mask = make_item(37, 53, seed=0)
    out = inpaint(generator, image, mask, "cpu")
    assert out.shape == image.shape and out.dtype == np.uint8
    hole = mask > 0
    # Outside the hole the composite is 0 * pred + 1 * img, and p / 255 * 255 rounds back to p
    # in float32 for every p in 0..255: the known pixels come back bit-identical.
    np.testing.assert_array_equal(out[~hole], image[~hole])
    assert np.abs(out[hole].astype(int) - image[hole]).mean() > 20  # the hole was repainted


def test_empty_mask_returns_the_input(generator: FFCResNetGenerator) -> None:
    image, _ = make_item(30, 41, seed=1)
    out = inpaint(generator, image, np.zeros((30, 41), dtype=bool), "cpu")
    np.testing.assert_array_equal(out, image)


def test_mask_is_binarised(generator: FFCResNetGenerator) -> None:
    image, mask = make_item(24, 24, seed=2)
    as_255 = inpaint(generator, image, mask, "cpu")
    np.testing.assert_array_equal(
        inpaint(generator, image, (mask > 0).astype(np.uint8), "cpu"), as_255
    )
    np.testing.assert_array_equal(inpaint(generator, image, mask > 0, "cpu"), as_255)
    np.testing.assert_array_equal(
        inpaint(generator, image, (mask > 0) * np.uint8(7), "cpu"), as_255
    )


def test_network_input_is_reflect_padded_masked_image_and_mask() -> None:
    image, mask = make_item(37, 53, seed=3)
    recorder = Recorder(0.0)
    inpaint(recorder, image, mask, "cpu")
    (x,) = recorder.inputs
    assert x.shape == (1, 4, 40, 56)
    img = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    hole = torch.from_numpy(mask > 0).float()
    padded_img = torch.nn.functional.pad(img[None], (0, 3, 0, 3), mode="reflect")[0]
    padded_hole = torch.nn.functional.pad(hole[None, None], (0, 3, 0, 3), mode="reflect")[0]
    torch.testing.assert_close(x[0, :3], padded_img * (1 - padded_hole), rtol=0, atol=0)
    torch.testing.assert_close(x[0, 3:], padded_hole, rtol=0, atol=0)


def test_symmetric_padding_repeats_the_edge() -> None:
    image, mask = make_item(37, 53, seed=4)
    recorder = Recorder(0.0)
    inpaint(recorder, image, np.zeros_like(mask), "cpu", pad_mode="symmetric")
    row = recorder.inputs[0][0, :3, 37, :53]
    torch.testing.assert_close(row, torch.from_numpy(image[36]).permute(1, 0).float() / 255)


def test_composite_and_uint8_conversion_truncate_like_lama() -> None:
    image, mask = make_item(20, 20, seed=5)
    out = inpaint(Recorder(0.5), image, mask, "cpu")
    hole = mask > 0
    assert (out[hole] == 127).all()  # clip(0.5 * 255) = 127.5, cast to uint8 truncates
    np.testing.assert_array_equal(out[~hole], image[~hole])


def test_different_sizes_come_back_in_order_and_equal_single_runs(
    generator: FFCResNetGenerator,
) -> None:
    items = [make_item(37, 53, 10), make_item(64, 64, 11), make_item(20, 30, 12)]
    batched = inpaint_batch(generator, items, "cpu")
    assert [out.shape for out in batched] == [image.shape for image, _ in items]
    for (image, mask), out in zip(items, batched, strict=True):
        np.testing.assert_array_equal(out, inpaint(generator, image, mask, "cpu"))


def test_same_padded_size_runs_as_one_batch(generator: FFCResNetGenerator) -> None:
    items = [make_item(37, 53, 20), make_item(40, 56, 21), make_item(33, 49, 22)]
    calls: list[tuple[int, ...]] = []
    hook = generator.register_forward_hook(lambda _m, args, _o: calls.append(args[0].shape))
    try:
        batched = inpaint_batch(generator, items, "cpu")
    finally:
        hook.remove()
    assert calls == [(3, 4, 40, 56)]
    singles = [inpaint(generator, image, mask, "cpu") for image, mask in items]
    for out, single in zip(batched, singles, strict=True):
        # Eval-mode BatchNorm is per-sample, but CPU conv kernels block the work differently for
        # a batch: the float outputs differ by up to 1 ulp (6e-8 measured), and the truncating
        # uint8 cast can turn that into one grey level. Observed here: identical uint8 images.
        assert np.abs(out.astype(int) - single).max() <= 1


def test_max_batch_size_splits_forwards(generator: FFCResNetGenerator) -> None:
    items = [make_item(16, 16, seed) for seed in range(3)]
    calls: list[int] = []
    hook = generator.register_forward_hook(lambda _m, args, _o: calls.append(args[0].shape[0]))
    try:
        chunked = inpaint_batch(generator, items, "cpu", max_batch_size=2)
    finally:
        hook.remove()
    assert calls == [2, 1]
    whole = inpaint_batch(generator, items, "cpu")
    for a, b in zip(chunked, whole, strict=True):
        assert np.abs(a.astype(int) - b).max() <= 1


def test_tiny_images_are_padded_to_the_network_minimum(generator: FFCResNetGenerator) -> None:
    image, mask = make_item(5, 9, seed=6)
    mask[2, 3] = 1
    out = inpaint(generator, image, mask, "cpu")
    assert out.shape == (5, 9, 3)
    np.testing.assert_array_equal(out[mask == 0], image[mask == 0])


def test_empty_batch() -> None:
    assert inpaint_batch(Recorder(0.0), [], "cpu") == []


GOOD_IMAGE = np.zeros((16, 16, 3), dtype=np.uint8)
GOOD_MASK = np.zeros((16, 16), dtype=np.uint8)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ((GOOD_IMAGE.astype(np.float32), GOOD_MASK), "uint8"),
        ((GOOD_IMAGE[..., :2], GOOD_MASK), "HxWx3"),
        ((GOOD_IMAGE[..., 0], GOOD_MASK), "HxWx3"),
        ((np.zeros((0, 16, 3), np.uint8), np.zeros((0, 16), np.uint8)), "HxWx3"),
        ((GOOD_IMAGE, GOOD_MASK[:15]), "mask shape"),
        ((GOOD_IMAGE, GOOD_MASK[..., None]), "mask shape"),
        ((GOOD_IMAGE, GOOD_MASK.astype(np.float32)), "uint8 or bool"),
        ((GOOD_IMAGE.tolist(), GOOD_MASK), "numpy"),
        ((GOOD_IMAGE,), "pair"),
    ],
)
def test_invalid_inputs_raise(item: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        inpaint_batch(Recorder(0.0), [item], "cpu")


def test_invalid_options_raise() -> None:
    items = [(GOOD_IMAGE, GOOD_MASK)]
    with pytest.raises(ValueError, match="pad_mode"):
        inpaint_batch(Recorder(0.0), items, "cpu", pad_mode="edge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_batch_size"):
        inpaint_batch(Recorder(0.0), items, "cpu", max_batch_size=0)
    with pytest.raises(ValueError, match="sequence"):
        inpaint_batch(Recorder(0.0), iter(items), "cpu")  # type: ignore[arg-type]


def test_results_do_not_depend_on_other_items(generator: FFCResNetGenerator) -> None:
    """Grouping never pads an item to another's size: a 16x16 item next to a 64x64 one gives
    exactly what it gives alone."""
    small, big = make_item(16, 16, 30), make_item(64, 64, 31)
    alone = inpaint(generator, *small, "cpu")
    together = inpaint_batch(generator, [big, small, big], "cpu")[1]
    np.testing.assert_array_equal(together, alone)

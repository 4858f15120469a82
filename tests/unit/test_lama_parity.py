"""This project's LaMa against the reference implementation's own numbers.

tests/data/lama/parity/ (see its README.md) holds a small generator in the official big-lama
layout (ngf 8, 2 blocks, every module type of big-lama), an input, and what advimman/lama's
generator and Inpaint-Anything's `inpaint_img_with_lama` made of them on an odd-sized photo.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from models.lama_checkpoint import load_generator, verify_lama_dir
from models.lama_inference import inpaint
from models.lama_network import FFCResNetGenerator
from tests.conftest import LAMA_DATA_DIR

PARITY_DIR = LAMA_DATA_DIR / "parity"
CHECKPOINT_DIR = PARITY_DIR / "small-lama"


@pytest.fixture(scope="module")
def cases() -> dict[str, np.ndarray]:
    with np.load(PARITY_DIR / "cases.npz") as data:
        return {name: data[name] for name in data.files}


@pytest.fixture(scope="module")
def generator() -> FFCResNetGenerator:
    return load_generator(CHECKPOINT_DIR, "cpu")


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The reference ran on one thread; a different reduction order may move a value by 1 ulp."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_the_fixture_is_the_small_official_layout() -> None:
    facts = verify_lama_dir(CHECKPOINT_DIR)
    assert (facts["ngf"], facts["n_blocks"], facts["num_generator_keys"]) == (8, 2, 157), facts
    assert facts["num_parameters"] == 135_571 and facts["num_skipped_keys"] == 0


def test_generator_forward_matches_the_reference(
    generator: FFCResNetGenerator, cases: dict[str, np.ndarray], one_thread: None
) -> None:
    with torch.inference_mode():
        out = generator(torch.from_numpy(cases["gen_input"])).numpy()
    expected = cases["gen_output"]
    assert out.shape == expected.shape == (1, 3, 64, 96)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)
    # The reference output is far from flat, so a near-constant network could not pass.
    assert expected.std(axis=(2, 3)).min() > 0.05


def test_inpaint_matches_inpaint_anything_end_to_end(
    generator: FFCResNetGenerator, cases: dict[str, np.ndarray], one_thread: None
) -> None:
    image, mask, expected = cases["e2e_image"], cases["e2e_mask"], cases["e2e_output"]
    assert image.shape == (61, 75, 3)  # odd size: padding to 64x80 and the crop back both run
    out = inpaint(generator, image, mask, "cpu")
    assert out.dtype == np.uint8 and out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)
    hole = mask > 0
    assert len(np.unique(expected[hole], axis=0)) > 100  # the hole holds a real picture


def test_inpaint_with_several_threads_is_within_one_level(
    generator: FFCResNetGenerator, cases: dict[str, np.ndarray]
) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = inpaint(generator, cases["e2e_image"], cases["e2e_mask"], "cpu")
    finally:
        torch.set_num_threads(before)
    diff = np.abs(out.astype(np.int16) - cases["e2e_output"].astype(np.int16))
    assert diff.max() <= 1
    hole = cases["e2e_mask"] > 0
    assert not diff[~hole].any()  # outside the hole the photo comes back bit for bit

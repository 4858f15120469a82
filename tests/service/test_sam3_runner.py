"""The SAM 3 runner on the tiny random-weight SAM 3: parity with transformers, kept features,
batching, deadlines and cancels."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import bentoml
import numpy as np
import pytest
import torch
from transformers import Sam3Model, Sam3Processor

from models.store import SAM3_FOLDER, TINY_NAMES
from runners.sam3 import Sam3Job, Sam3Runner, unpack_masks
from tooling import model_import
from tooling.tiny import build_tiny_sam3_dir

# Random weights score every query near 0.25: a threshold under that keeps instances to compare.
LOW = 0.1


def _photo(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, height * width * 3).reshape(height, width, 3)
    return np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SAM 3 in the session's store (tests/conftest.py); its stored folder."""
    try:
        tag = str(bentoml.models.get(f"{TINY_NAMES['sam3']}:latest").tag)
    except bentoml.exceptions.NotFound:
        built = build_tiny_sam3_dir(tmp_path_factory.mktemp("sam3") / "sam3-tiny")
        tag = model_import.import_sam3(built, TINY_NAMES["sam3"], demo=True)
    return Path(bentoml.models.get(tag).path) / SAM3_FOLDER


@pytest.fixture(scope="module")
def runner(folder: Path) -> Sam3Runner:
    runner = Sam3Runner()
    assert runner.state.loaded, runner.state.error
    return runner


def _reference(folder: Path, image: np.ndarray, text: str, threshold: float) -> dict:
    """transformers' own path, as its model card shows it."""
    model = Sam3Model.from_pretrained(folder).eval()
    processor = Sam3Processor.from_pretrained(folder)
    inputs = processor(images=image, text=text, return_tensors="pt")
    with torch.inference_mode():
        outputs = model(**inputs)
    return processor.post_process_instance_segmentation(
        outputs, threshold=threshold, target_sizes=[image.shape[:2]]
    )[0]


def _job(key: str, text: str, image: np.ndarray | None, size=(75, 100), **more) -> Sam3Job:
    return Sam3Job(key=key, text=text, size=list(size), image=image, threshold=LOW, **more)


def _assert_same(found: dict, reference: dict) -> None:
    masks = unpack_masks(found["masks"], found["size"])
    assert masks.shape == tuple(reference["masks"].shape)
    assert len(masks) > 0, "nothing above the threshold: the comparison would be empty"
    # The same arithmetic in the same process (same threads): bit for bit.
    np.testing.assert_allclose(found["scores"], reference["scores"].numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(found["boxes"], reference["boxes"].numpy(), rtol=0, atol=0)
    assert np.array_equal(masks, reference["masks"].numpy().astype(bool))


def test_masks_equal_transformers_own_post_process(runner: Sam3Runner, folder: Path) -> None:
    image = _photo(75, 100, 1)
    found = runner.segment([_job("photo-1", "person", image)])[0]
    _assert_same(found, _reference(folder, image, "person", LOW))


def test_a_new_word_on_a_kept_photo_does_not_recompute_its_features(
    runner: Sam3Runner, folder: Path
) -> None:
    image = _photo(75, 100, 2)
    runner.segment([_job("photo-2", "person", image)])
    before = asyncio.run(runner.status())["details"]
    found = runner.segment([_job("photo-2", "red car", None)])[0]
    after = asyncio.run(runner.status())["details"]
    assert after["vision_runs"] == before["vision_runs"]
    assert after["images_encoded"] == before["images_encoded"]
    assert after["text_queries"] - before["text_queries"] == 1
    assert after["features_reused"] - before["features_reused"] == 1
    _assert_same(found, _reference(folder, image, "red car", LOW))


def test_an_unknown_photo_key_asks_for_the_image(runner: Sam3Runner) -> None:
    assert runner.segment([_job("never-seen", "dog", None)]) == [{"unknown_features": True}]


def test_a_batch_encodes_its_photos_in_one_run(runner: Sam3Runner) -> None:
    one, two = _photo(75, 100, 3), _photo(75, 100, 4)
    before = asyncio.run(runner.status())["details"]
    batched = runner.run_jobs([_job("b-1", "cat", one), _job("b-2", "cat", two)], keep=False)
    after = asyncio.run(runner.status())["details"]
    assert after["vision_runs"] - before["vision_runs"] == 1
    assert after["images_encoded"] - before["images_encoded"] == 2
    alone = runner.run_jobs([_job("b-2", "cat", two)], keep=False)[0]
    np.testing.assert_allclose(batched[1]["scores"], alone["scores"], atol=1e-5)


def test_expired_and_cancelled_jobs_are_skipped(runner: Sam3Runner) -> None:
    before = asyncio.run(runner.status())["details"]
    asyncio.run(runner.cancel(["gone"]))
    image = _photo(75, 100, 5)
    late = _job("late", "cat", image, deadline=time.time() - 1)
    gone = _job("gone", "cat", image, call_id="gone")
    assert runner.segment([late, gone]) == [{"skipped": True}] * 2
    after = asyncio.run(runner.status())["details"]
    assert after["skipped_expired"] - before["skipped_expired"] == 1
    assert after["skipped_cancelled"] - before["skipped_cancelled"] == 1
    assert after["images_encoded"] == before["images_encoded"]

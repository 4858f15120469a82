"""Runners on their default (fastest) backend: what /ready reports, agreement with eager."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import bentoml
import numpy as np
import pytest
import torch

from config.settings import get_settings
from models.backends import host_has_bf16
from models.sam_checkpoint import SamArchitecture, load_sam
from runners.lama import LamaJob, LamaRunner
from runners.runtime import COMPUTE_LOCK_FILE, compute_slot
from runners.sam import SamJob, SamRunner
from utils.sam_frame import to_working_image


@pytest.fixture(scope="module")
def default_backends(tiny_tags: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.pop(name, None) for name in ("SAM_BACKEND", "LAMA_BACKEND")}
    get_settings.cache_clear()
    yield
    os.environ.update({name: value for name, value in saved.items() if value is not None})
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def sam(default_backends: None) -> SamRunner:
    runner = SamRunner()
    assert runner.state.loaded, runner.state.error
    return runner


def test_sam_runner_reports_its_backend_threads_host_and_warm_up(sam: SamRunner) -> None:
    details = asyncio.run(sam.status())["details"]
    expected = "bf16" if host_has_bf16() else "fp32"
    assert details["encoder"]["backend"] == "openvino"
    assert details["encoder"]["precision"] == expected
    # The mask decoder stays fp32 whatever the hardware (runners.fast_paths.BF16_DEFAULT_OK).
    assert details["decoder"]["backend"] == "openvino"
    assert details["decoder"]["precision"] == "fp32"
    assert details["torch_threads"] == details["host"]["cores"] == torch.get_num_threads()
    assert details["warm_up_s"] >= 0


def test_sam_runner_embedding_is_close_to_eager(sam: SamRunner, tiny_tags: dict[str, str]) -> None:
    """The same weights in eager fp32, loaded apart: the runner keeps no eager encoder."""
    assert not list(sam.model.image_encoder.parameters()), "the eager encoder was kept"
    stored = bentoml.models.get(tiny_tags["sam"])
    metadata = stored.info.metadata
    architecture = SamArchitecture.from_metadata(metadata["architecture"])
    reference = load_sam(Path(stored.path) / metadata["checkpoint_file"], architecture, "cpu")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    working = to_working_image(image)
    embedding = sam.embed([SamJob(image=working)])[0]
    pixels = torch.as_tensor(working).permute(2, 0, 1)[None]
    with torch.inference_mode():
        eager = reference.image_encoder(reference.preprocess(pixels))[0].numpy()
    assert embedding.shape == eager.shape == (256, 64, 64)
    assert np.abs(embedding - eager).max() <= 0.05 * np.abs(eager).max()


def test_lama_runner_on_its_default_backend_keeps_pixels_outside_the_hole(
    default_backends: None,
) -> None:
    runner = LamaRunner()
    assert runner.state.loaded, runner.state.error
    assert asyncio.run(runner.status())["details"]["generator"]["backend"] == "openvino"
    rng = np.random.default_rng(1)
    item = np.zeros((40, 52, 4), np.uint8)
    item[..., :3] = rng.integers(0, 256, (40, 52, 3))
    item[10:30, 12:40, 3] = 255
    result = runner.inpaint([LamaJob(item=item)])[0]
    assert result.shape == (40, 52, 3)
    np.testing.assert_array_equal(result[:10], item[:10, :, :3])


def test_compute_lock_is_shared_across_processes() -> None:
    """While a heavy forward holds the lock here, another process cannot take it."""
    import subprocess
    import sys

    probe = (
        "import fcntl, sys; f = open(sys.argv[1], 'a+b')\n"
        "try: fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')\n"
        "except BlockingIOError: print('held')"
    )
    run = [sys.executable, "-c", probe, str(COMPUTE_LOCK_FILE)]
    with compute_slot(torch.device("cpu")):
        assert subprocess.run(run, capture_output=True, text=True).stdout.strip() == "held"
    assert subprocess.run(run, capture_output=True, text=True).stdout.strip() == "free"

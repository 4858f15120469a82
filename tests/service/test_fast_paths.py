"""Runners on their default (fastest) backend: what /ready reports, agreement with eager."""

from __future__ import annotations

import asyncio
import fcntl
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import pytest
import torch

from config.settings import get_settings
from models.backends import OpenVinoModule
from models.sam_checkpoint import SamArchitecture, load_sam
from runners import fast_paths
from runners.fast_paths import BF16_DEFAULT_OK
from runners.lama import LamaJob, LamaRunner
from runners.runtime import COMPUTE_LOCK_FILE, compute_slot, run_heavy
from runners.sam import SamJob, SamRunner
from runners.sd import SdJob, SdRunner
from tests.host_cpu import expected_precision, has_bf16, thread_priority
from tests.service.conftest import BACKEND_SETTINGS
from utils.sam_frame import to_working_image


@pytest.fixture(scope="module")
def default_backends(tiny_tags: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.pop(name, None) for name in BACKEND_SETTINGS}
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
    expected = expected_precision()
    assert details["encoder"]["backend"] == "openvino"
    assert details["encoder"]["precision"] == expected
    # The decoder stays fp32: the editor's preview decodes in fp32 too (BF16_DEFAULT_OK).
    assert details["decoder"]["backend"] == "openvino"
    assert details["decoder"]["precision"] == "fp32"
    assert details["torch_threads"] == details["host"]["cores"] == torch.get_num_threads()
    assert details["warm_up_s"] > 0


def test_warm_up_runs_the_served_forwards_before_the_first_request(
    default_backends: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first forward on a converted model pays its one-time set-up (measured here, tiny
    models, 2 cores: 4.3x the next ones for SAM's encoder, 3.5x for LaMa). The warm-up must
    pay it: each network's served forward, the very callable requests use, has run once when
    the runner is built, on the request's input shape."""
    calls: dict[str, list[tuple[int, ...]]] = {"encoder": [], "decoder": []}

    def counted(make: Any, name: str) -> Any:
        def build(*args: Any, **kwargs: Any) -> Any:
            forward, details = make(*args, **kwargs)

            def run(first: torch.Tensor, *rest: Any) -> Any:
                calls[name].append(tuple(first.shape))
                return forward(first, *rest)

            return run, details

        return build

    monkeypatch.setattr(fast_paths, "sam_encoder", counted(fast_paths.sam_encoder, "encoder"))
    monkeypatch.setattr(fast_paths, "sam_decoder", counted(fast_paths.sam_decoder, "decoder"))
    runner = SamRunner()
    assert runner.state.loaded, runner.state.error
    assert runner.state.report()["details"]["encoder"]["backend"] == "openvino"
    assert calls["encoder"] == [(1, 3, 1024, 1024)], "the warm-up did not run the encoder"
    assert len(calls["decoder"]) == 1, "the warm-up did not run the decoder"
    photo = np.random.default_rng(0).integers(0, 256, (683, 1024, 3), dtype=np.uint8)
    runner.embed([SamJob(image=photo)])
    assert calls["encoder"][1] == calls["encoder"][0]  # the request: the warmed shape


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


@pytest.fixture(scope="module")
def sd(default_backends: None) -> SdRunner:
    runner = SdRunner()
    assert runner.state.loaded, runner.state.error
    return runner


def test_sd_runner_reports_its_unet_backend(sd: SdRunner) -> None:
    unet = asyncio.run(sd.status())["details"]["unet"]
    bf16 = has_bf16() and BF16_DEFAULT_OK["sd_unet"]
    assert unet["backend"] == "openvino" and unet["precision"] == ("bf16" if bf16 else "fp32")
    assert "sd_unet-" in unet["artefact"]


def _sd_job(job_id: str, steps: int) -> SdJob:
    rng = np.random.default_rng(7)
    mask = np.zeros((256, 256), bool)
    mask[64:192, 64:192] = True
    return SdJob(
        image=rng.integers(0, 256, (256, 256, 3), dtype=np.uint8),
        mask=mask,
        prompt="a red car",
        num_inference_steps=steps,
        guidance_scale=7.5,
        seed=7,
        job_id=job_id,
    )


@pytest.fixture
def unet_steps(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Per compiled UNet call: whether the host-wide compute lock was held while it ran."""
    held: list[bool] = []
    call = OpenVinoModule.__call__

    def probe(self: OpenVinoModule, *inputs: torch.Tensor) -> Any:
        with open(COMPUTE_LOCK_FILE, "a+b") as handle:  # its own open file: flock excludes it
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(handle, fcntl.LOCK_UN)
                held.append(False)
            except BlockingIOError:
                held.append(True)
        return call(self, *inputs)

    monkeypatch.setattr(OpenVinoModule, "__call__", probe)
    return held


def test_sd_runner_steps_run_openvino_under_the_lock_and_report_progress(
    sd: SdRunner, unet_steps: list[bool]
) -> None:
    result = sd.inpaint([_sd_job("job-openvino", steps=3)])[0]
    assert result.shape == (256, 256, 3)
    assert unet_steps == [True] * 3
    report = asyncio.run(sd.progress(["job-openvino"]))["job-openvino"]
    assert report["step"] == report["total_steps"] == 3


def test_sd_runner_on_openvino_stops_when_its_caller_gives_up(
    sd: SdRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _sd_job("job-deadline", steps=4).model_copy(update={"deadline": time.time() + 3600})
    steps: list[int] = []
    call = OpenVinoModule.__call__

    def give_up(self: OpenVinoModule, *inputs: torch.Tensor) -> Any:
        steps.append(inputs[0].shape[0])
        job.deadline = time.time() - 1  # the caller gives up during the first step
        return call(self, *inputs)

    monkeypatch.setattr(OpenVinoModule, "__call__", give_up)
    assert sd.inpaint([job])[0].size == 0, "SKIPPED, as for a job expired before it ran"
    assert steps == [2], "one guided step, then the step callback stopped the call"


def _lock_holder() -> str:
    """'held' when something else holds the compute lock, else 'free' (another process)."""
    probe = (
        "import fcntl, sys; f = open(sys.argv[1], 'a+b')\n"
        "try: fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')\n"
        "except BlockingIOError: print('held')"
    )
    run = [sys.executable, "-c", probe, str(COMPUTE_LOCK_FILE)]
    return subprocess.run(run, capture_output=True, text=True, check=True).stdout.strip()


def test_compute_lock_is_shared_across_processes() -> None:
    """While a heavy forward holds the lock here, another process cannot take it."""
    with compute_slot(torch.device("cpu")):
        assert _lock_holder() == "held"
    assert _lock_holder() == "free"


def test_a_heavy_forward_runs_below_its_callers_priority() -> None:
    """On a CPU, a heavy forward runs in the compute slot, in inference mode, on a thread at
    HEAVY_WORK_NICE; the calling thread (e.g. a click's decoding) keeps its own priority."""
    caller, caller_priority = threading.get_native_id(), thread_priority()

    def forward() -> tuple[int, int, bool, str]:
        inference = torch.is_inference_mode_enabled()
        return threading.get_native_id(), thread_priority(), inference, _lock_holder()

    thread, priority, inference, lock = run_heavy(torch.device("cpu"), forward)
    assert thread != caller
    assert priority == max(caller_priority, get_settings().heavy_work_nice) == 19
    assert inference and lock == "held"
    assert thread_priority() == caller_priority
    # Nested in a heavy forward, it runs in place (taking the slot again would deadlock).
    nested = run_heavy(torch.device("cpu"), lambda: run_heavy(torch.device("cpu"), thread_priority))
    assert nested == 19
    assert _lock_holder() == "free"

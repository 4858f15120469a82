"""The fast CPU backends: which one a host gets, and that fp32 ones agree with eager."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from models import backends
from models.backends import BackendChoice, accelerate, choose_backend
from models.lama_checkpoint import load_generator
from models.lama_inference import inpaint
from models.sam_agreement import decoder_agreement, example_cases, mask_agreement
from models.sam_checkpoint import SAM_ARCHITECTURES, load_sam
from models.sam_prompt_decoder import PromptDecoder, prompt_points
from tests.conftest import LAMA_DATA_DIR
from tests.host_cpu import needs_bf16
from tooling.tiny import write_random_sam_checkpoint

PARITY = LAMA_DATA_DIR / "parity"
OPENVINO_FP32 = BackendChoice("openvino", "fp32", "test")
FULL_FORWARD_ENV = "INPAINT_TEST_SAM_VIT_B_FORWARD"


@pytest.fixture
def flags(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The CPU flags the backend choice sees, set by the test."""
    chosen: set[str] = set()
    monkeypatch.setattr(backends, "cpu_flags", lambda: frozenset(chosen))
    return chosen


def test_auto_picks_bf16_only_with_bf16_hardware_and_an_agreeing_network(flags: set) -> None:
    flags.update({"avx2", "avx512f"})
    assert choose_backend("auto", "auto", "cpu", bf16_ok=True)[:2] == ("openvino", "fp32")
    flags.add("avx512_bf16")
    assert choose_backend("auto", "auto", "cpu", bf16_ok=True)[:2] == ("openvino", "bf16")
    assert choose_backend("auto", "auto", "cpu", bf16_ok=False)[:2] == ("openvino", "fp32")
    flags.discard("avx512_bf16")
    flags.add("amx_bf16")
    assert choose_backend("auto", "auto", "cpu", bf16_ok=True)[:2] == ("openvino", "bf16")


def test_settings_force_a_path_and_bf16_needs_hardware(flags: set) -> None:
    assert choose_backend("eager", "bf16", "cpu", bf16_ok=True)[:2] == ("eager", "fp32")
    assert choose_backend("openvino", "fp32", "cpu", bf16_ok=True)[:2] == ("openvino", "fp32")
    forced = choose_backend("openvino", "bf16", "cpu", bf16_ok=True)
    assert forced[:2] == ("openvino", "fp32") and "no bf16 hardware" in forced.reason


def test_cuda_and_a_missing_openvino_stay_on_torch(
    flags: set, monkeypatch: pytest.MonkeyPatch
) -> None:
    flags.add("amx_bf16")
    assert choose_backend("openvino", "bf16", "cuda", bf16_ok=True)[:2] == ("eager", "fp32")
    monkeypatch.setattr(backends, "openvino_version", lambda: None)
    choice = choose_backend("auto", "auto", "cpu", bf16_ok=True)
    assert choice == BackendChoice("eager", "fp32", "openvino is not installed")


def test_cpu_report_names_the_cores_and_the_known_features() -> None:
    report = backends.cpu_report()
    assert report["cores"] == backends.usable_cores() >= 1
    assert set(report["features"]) <= set(backends.FEATURE_FLAGS)


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory: pytest.TempPathFactory) -> torch.nn.Module:
    path = tmp_path_factory.mktemp("sam") / "sam_tiny.pth"
    write_random_sam_checkpoint(path, SAM_ARCHITECTURES["tiny"])
    return load_sam(path, SAM_ARCHITECTURES["tiny"], "cpu")


@pytest.fixture(scope="module")
def sam_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One conversion of the tiny encoder shared by the tests that do not test conversion."""
    return tmp_path_factory.mktemp("compiled")


def _sam_openvino(sam: torch.nn.Module, cache: Path, choice: BackendChoice) -> tuple:
    example = torch.zeros(1, 3, 1024, 1024)
    return accelerate(
        sam.image_encoder, example, choice=choice, cache_root=cache, tag="sam", threads=2,
        dynamic=[0],
    )  # fmt: skip


def test_openvino_fp32_sam_encoder_gives_eager_masks_on_the_examples(
    tiny_sam: torch.nn.Module, sam_cache: Path
) -> None:
    """Same architecture as vit_b (windowed + global attention, relative positions), small."""
    encoder, details = _sam_openvino(tiny_sam, sam_cache, OPENVINO_FP32)
    assert details["backend"] == "openvino" and Path(details["artefact"]).is_file()
    agreement = mask_agreement(tiny_sam, encoder, example_cases())
    assert len(agreement) >= 6
    for case, ious in agreement.items():
        assert min(ious) >= 0.999, (case, ious)


def _decoder_openvino(sam: torch.nn.Module, cache: Path, choice: BackendChoice) -> tuple:
    coords, labels = prompt_points([[0.0, 0.0]], None, None)
    example = (torch.zeros(1, 256, 64, 64), torch.from_numpy(coords), torch.from_numpy(labels))
    return accelerate(
        PromptDecoder(sam).eval(), example, choice=choice, cache_root=cache, tag="sam_decoder",
        threads=2, dynamic=([], [1], [1]),
    )  # fmt: skip


def test_openvino_fp32_sam_decoder_gives_eager_masks_and_scores(
    tiny_sam: torch.nn.Module, sam_cache: Path
) -> None:
    """The prompt encoder + mask decoder graph: a click and its padding point on the example
    photos, then a box with a negative click (three points) on random features."""
    eager = PromptDecoder(tiny_sam).eval()
    decode, details = _decoder_openvino(tiny_sam, sam_cache, OPENVINO_FP32)
    assert details["backend"] == "openvino" and details["precision"] == "fp32"
    for case, ious in decoder_agreement(tiny_sam, decode, example_cases()).items():
        assert min(ious) >= 0.999, (case, ious)
    features = torch.from_numpy(np.random.default_rng(3).normal(size=(1, 256, 64, 64)))
    box, box_labels = prompt_points([[30.0, 40.0]], [0], [10.0, 20.0, 600.0, 500.0])
    inputs = (features.float(), torch.from_numpy(box), torch.from_numpy(box_labels))
    with torch.inference_mode():
        expected_logits, expected_scores = eager(*inputs)
    logits, scores = decode(*inputs)
    assert logits.shape == (1, 3, 256, 256) and scores.shape == (1, 3)
    torch.testing.assert_close(logits, expected_logits, rtol=0, atol=1e-4)
    torch.testing.assert_close(scores, expected_scores, rtol=0, atol=1e-5)


@needs_bf16
def test_openvino_bf16_sam_decoder_agrees_after_an_fp32_compile(
    tiny_sam: torch.nn.Module, sam_cache: Path
) -> None:
    """SAM_PRECISION=bf16 decodes in bf16 too: its masks agree (mean IoU >= 0.98, the bar of
    SAM's bf16 defaults), compiled from the same artefact as fp32 without reusing fp32's blob
    (which gave empty masks)."""
    _decoder_openvino(tiny_sam, sam_cache, OPENVINO_FP32)
    decode, details = _decoder_openvino(tiny_sam, sam_cache, BackendChoice("openvino", "bf16", "t"))
    assert details["precision"] == "bf16"
    ious = [
        iou
        for case in decoder_agreement(tiny_sam, decode, example_cases()).values()
        for iou in case
    ]
    assert np.mean(ious) >= 0.98, ious


def test_openvino_artefact_is_made_once_and_reused(
    tiny_sam: torch.nn.Module, sam_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, first = _sam_openvino(tiny_sam, sam_cache, OPENVINO_FP32)
    import openvino

    def no_conversion(*args: object, **kwargs: object) -> None:
        raise AssertionError("converted a second time")

    monkeypatch.setattr(openvino, "convert_model", no_conversion)
    encoder, second = _sam_openvino(tiny_sam, sam_cache, BackendChoice("openvino", "bf16", "t"))
    assert second["backend"] == "openvino" and second["artefact"] == first["artefact"]
    assert encoder(torch.zeros(1, 3, 1024, 1024)).shape == (1, 256, 64, 64)


def test_a_failed_conversion_falls_back_to_eager(
    tiny_sam: torch.nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import openvino

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unsupported operation")

    monkeypatch.setattr(openvino, "convert_model", broken)
    encoder, details = _sam_openvino(tiny_sam, tmp_path, OPENVINO_FP32)
    assert encoder is tiny_sam.image_encoder
    assert details["backend"] == "eager" and "RuntimeError" in details["reason"]


def _lama_openvino(cache: Path, choice: BackendChoice) -> tuple:
    generator = load_generator(PARITY / "small-lama", "cpu")
    example = torch.rand(1, 4, 64, 64)
    return accelerate(
        generator, example, choice=choice, cache_root=cache, tag="lama", threads=2,
        dynamic=[0, 2, 3],
    )  # fmt: skip


def test_openvino_fp32_lama_matches_the_reference_fixture(tmp_path: Path) -> None:
    generator, details = _lama_openvino(tmp_path, OPENVINO_FP32)
    assert details["backend"] == "openvino"
    cases = np.load(PARITY / "cases.npz")
    output = generator(torch.from_numpy(cases["gen_input"])).numpy()
    assert np.abs(output - cases["gen_output"]).max() <= 1e-5
    # A different size than the conversion example: height and width stay dynamic.
    e2e = inpaint(generator, cases["e2e_image"], cases["e2e_mask"], "cpu")
    diff = np.abs(e2e.astype(int) - cases["e2e_output"].astype(int))
    assert diff.max() <= 1  # within 1/255


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get(FULL_FORWARD_ENV) != "1", reason=f"set {FULL_FORWARD_ENV}=1")
def test_openvino_fp32_full_size_vit_b_gives_eager_masks(tmp_path: Path) -> None:
    """The real architecture (conversion ~2 min on 2 cores); two example photos."""
    path = write_random_sam_checkpoint(tmp_path / "sam_vit_b.pth", SAM_ARCHITECTURES["vit_b"])
    sam = load_sam(path, SAM_ARCHITECTURES["vit_b"], "cpu")
    encoder, details = _sam_openvino(sam, tmp_path / "cache", OPENVINO_FP32)
    assert details["backend"] == "openvino"
    for case, ious in mask_agreement(sam, encoder, example_cases(limit=2)).items():
        assert min(ious) >= 0.999, (case, ious)

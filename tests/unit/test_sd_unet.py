"""The SD UNet on OpenVINO: same images as eager, converted once, and eager where it must be."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from config.settings import get_settings
from models import backends
from models.backends import BackendChoice, accelerate
from models.sd_pipeline import load_inpaint_pipeline
from models.sd_unet import UNetCore, added_inputs, compiled_forward, example_inputs, unsupported
from runners import fast_paths
from tests.host_cpu import needs_bf16
from tooling.tiny import TINY_INPAINTING_UNET, build_tiny_sd_inpainting_dir

CPU = torch.device("cpu")
SIZE = 256  # the tiny pipeline's native size; latents 32x32


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd_inpainting_dir(tmp_path_factory.mktemp("sd") / "tiny-sd-inpainting")


@pytest.fixture
def load(tiny_dir: Path) -> Callable[[], Any]:
    """A fresh tiny pipeline (each test may replace its UNet's forward)."""
    return lambda: load_inpaint_pipeline(tiny_dir, CPU, fp16=False)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One conversion shared by the tests that do not test conversion itself."""
    return tmp_path_factory.mktemp("compiled")


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Set SD_* settings and the converted-model cache for runners.fast_paths."""

    def apply(cache: Path, backend: str = "openvino", precision: str = "fp32") -> None:
        monkeypatch.setenv("COMPILED_MODELS_DIR", str(cache))
        monkeypatch.setenv("SD_BACKEND", backend)
        monkeypatch.setenv("SD_PRECISION", precision)
        get_settings.cache_clear()

    yield apply
    get_settings.cache_clear()


def _entry(root: Path) -> Path:
    """A stand-in for the SD model's store folder (`<name>/<version>`): the cache key."""
    return root / "sd-tiny" / "v1"


def _generate(pipe: Any, seeds: list[int], steps: int = 3) -> np.ndarray:
    """The runner's call: one window per seed, classifier-free guidance on."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[64:192, 80:200] = 255
    with torch.inference_mode():
        return pipe(
            prompt=["a red car"] * len(seeds),
            image=[image] * len(seeds),
            mask_image=[Image.fromarray(mask)] * len(seeds),
            height=SIZE,
            width=SIZE,
            num_inference_steps=steps,
            guidance_scale=7.5,
            generator=[torch.Generator().manual_seed(seed) for seed in seeds],
            output_type="np",
        ).images


@pytest.fixture
def ov_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The batch size of every call the compiled model runs."""
    batches: list[int] = []
    call = backends.OpenVinoModule.__call__

    def counted(self: Any, *inputs: torch.Tensor) -> Any:
        batches.append(inputs[0].shape[0])
        return call(self, *inputs)

    monkeypatch.setattr(backends.OpenVinoModule, "__call__", counted)
    return batches


def test_openvino_fp32_unet_gives_the_eager_pipelines_images(
    load: Callable[[], Any], configure: Callable[..., None], shared_cache: Path, ov_batches: list
) -> None:
    """Two jobs in one call, guidance on: every step runs the compiled UNet on a batch of 4."""
    pipe = load()
    expected = _generate(pipe, [1, 2])
    configure(shared_cache)
    details = fast_paths.sd_unet(pipe, _entry(shared_cache), CPU, threads=2)
    assert details["backend"] == "openvino" and details["precision"] == "fp32"
    assert Path(details["artefact"]).is_file()
    images = _generate(pipe, [1, 2])
    assert ov_batches == [4, 4, 4]
    assert np.abs(images - expected).max() <= 1e-4  # measured ~5e-6 on [0, 1]
    alone = _generate(pipe, [2])[0]  # batch 2: the batch dimension is dynamic
    assert np.abs(alone - images[1]).max() <= 1e-4


def test_the_artefact_is_made_once_and_reused(
    load: Callable[[], Any],
    configure: Callable[..., None],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure(tmp_path)
    first = fast_paths.sd_unet(load(), _entry(tmp_path), CPU, threads=2)
    import openvino

    def no_conversion(*args: object, **kwargs: object) -> None:
        raise AssertionError("converted a second time")

    monkeypatch.setattr(openvino, "convert_model", no_conversion)
    configure(tmp_path, precision="bf16")  # another precision compiles the same IR
    pipe = load()
    second = fast_paths.sd_unet(pipe, _entry(tmp_path), CPU, threads=2)
    assert second["backend"] == "openvino" and second["artefact"] == first["artefact"]
    assert "sd_unet-sd-tiny-v1" in first["artefact"]  # keyed by the store entry
    assert _generate(pipe, [3], steps=1).shape == (1, SIZE, SIZE, 3)


def test_the_setting_forces_eager(
    load: Callable[[], Any], configure: Callable[..., None], tmp_path: Path
) -> None:
    configure(tmp_path, backend="eager")
    pipe = load()
    details = fast_paths.sd_unet(pipe, _entry(tmp_path), CPU, threads=2)
    assert details == {"backend": "eager", "precision": "fp32", "reason": "forced by setting"}
    assert "forward" not in vars(pipe.unet) and not any(tmp_path.iterdir())


def test_a_failed_conversion_falls_back_to_eager(
    load: Callable[[], Any],
    configure: Callable[..., None],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import openvino

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unsupported operation")

    monkeypatch.setattr(openvino, "convert_model", broken)
    configure(tmp_path)
    pipe = load()
    details = fast_paths.sd_unet(pipe, _entry(tmp_path), CPU, threads=2)
    assert details["backend"] == "eager" and "RuntimeError" in details["reason"]
    assert "forward" not in vars(pipe.unet)
    assert _generate(pipe, [4], steps=1).shape == (1, SIZE, SIZE, 3)


def test_calls_the_graph_cannot_take_run_the_torch_unet(
    load: Callable[[], Any], configure: Callable[..., None], shared_cache: Path, ov_batches: list
) -> None:
    pipe = load()
    configure(shared_cache)
    fast_paths.sd_unet(pipe, _entry(shared_cache), CPU, threads=2)
    unet = pipe.unet
    eager = partial(type(unet).forward, unet)
    rng = torch.Generator().manual_seed(0)
    sample = torch.randn(3, 9, 32, 32, generator=rng)
    text = torch.randn(3, 77, 32, generator=rng)
    with torch.inference_mode():
        expected = eager(sample, 981, text, return_dict=False)[0]
        for timestep in (981, torch.tensor(981), torch.tensor([981.0] * 3)):
            (noise,) = unet(sample, timestep, text, return_dict=False)
            torch.testing.assert_close(noise, expected, rtol=0, atol=1e-4)
        assert torch.equal(unet(sample, 981, encoder_hidden_states=text).sample, noise)
        assert ov_batches == [3] * 4
        small = sample[:, :, :16, :16]  # another latent size
        assert torch.equal(unet(small, 981, text).sample, eager(small, 981, text).sample)
        mask = torch.ones(3, 77)  # an input the graph does not take
        masked = unet(sample, 981, text, encoder_attention_mask=mask).sample
        assert torch.equal(masked, eager(sample, 981, text, encoder_attention_mask=mask).sample)
    assert ov_batches == [3] * 4  # neither ran on OpenVINO


def _openvino(module: torch.nn.Module, example: tuple, cache: Path, precision: str) -> tuple:
    return accelerate(
        module.eval(),
        example,
        choice=BackendChoice("openvino", precision, "test"),
        cache_root=cache,
        tag=f"{type(module).__name__}-{example[0].shape[1]}-{len(example)}",
        threads=2,
        dynamic=tuple([0] for _ in example),
    )


def _tiny_unet(**config: Any) -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(**{**TINY_INPAINTING_UNET, "sample_size": 16, **config}).eval()


def test_an_sdxl_unet_converts_with_its_added_conditions(tmp_path: Path) -> None:
    """SDXL's UNet also takes pooled text embeddings and six size/crop numbers."""
    unet = _tiny_unet(
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=16 + 6 * 8,
    )
    assert added_inputs(unet) == ("text_embeds", "time_ids") and unsupported(unet) is None
    example = example_inputs(unet, text_length=77)
    run, details = _openvino(UNetCore(unet, added_inputs(unet)), example, tmp_path, "fp32")
    assert details["backend"] == "openvino"
    forward = compiled_forward(unet, run, example)
    rng = torch.Generator().manual_seed(1)
    sample = torch.randn(3, 9, 16, 16, generator=rng)
    text = torch.randn(3, 77, 32, generator=rng)
    added = {"text_embeds": torch.randn(3, 16, generator=rng), "time_ids": torch.rand(3, 6) * 1024}
    with torch.inference_mode():
        expected = unet(sample, torch.tensor(500), text, added_cond_kwargs=added).sample
        noise = forward(sample, torch.tensor(500), text, added_cond_kwargs=added).sample
    torch.testing.assert_close(noise, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"time_cond_proj_dim": 8}, "timestep_cond"),
        ({"class_embed_type": "timestep"}, "class labels"),
        ({"addition_embed_type": "text"}, "added conditions"),
    ],
)
def test_unets_with_other_inputs_stay_eager(config: dict, words: str) -> None:
    unet = _tiny_unet(**config)
    pipe = SimpleNamespace(unet=unet, tokenizer=SimpleNamespace(model_max_length=77))
    details = fast_paths.sd_unet(pipe, Path("/nonexistent/sd/v1"), CPU, threads=2)
    assert details["backend"] == "eager" and words in details["reason"]
    assert "forward" not in vars(unet)


def test_cuda_keeps_the_torch_unet() -> None:
    unet = _tiny_unet().half()
    pipe = SimpleNamespace(unet=unet, tokenizer=None)
    details = fast_paths.sd_unet(pipe, Path("/nonexistent"), torch.device("cuda"), threads=2)
    assert details == {"backend": "torch-cuda", "precision": "fp16"}


@needs_bf16
def test_openvino_bf16_unet_stays_close_to_eager_after_an_fp32_compile(
    load: Callable[[], Any], configure: Callable[..., None], shared_cache: Path
) -> None:
    """A sanity bound, not the agreement criterion (docs/benchmarks.md). An fp32 compile
    first: a bf16 compile that imported its cached blob gave NaN (OpenVINO 2026.4)."""
    configure(shared_cache)
    fast_paths.sd_unet(load(), _entry(shared_cache), CPU, threads=2)
    pipe = load()
    expected = _generate(pipe, [5])
    configure(shared_cache, precision="bf16")
    details = fast_paths.sd_unet(pipe, _entry(shared_cache), CPU, threads=2)
    assert details["precision"] == "bf16"
    error = np.abs(_generate(pipe, [5]) - expected)
    assert np.isfinite(error).all() and error.mean() <= 0.02  # measured ~0.004 on [0, 1]

"""Stable Diffusion inpainting folders: verification, offline loading, the tiny model."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

from models.sd_pipeline import (
    SdPipelineError,
    load_inpaint_pipeline,
    native_resolution,
    verify_sd_inpainting_dir,
)
from tooling.tiny import build_tiny_sd_inpainting_dir

UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


@contextmanager
def no_network() -> Iterator[None]:
    """Any attempt to open a connection fails loudly instead of waiting for a timeout."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    with (
        mock.patch.object(socket.socket, "connect", refuse),
        mock.patch.object(socket.socket, "connect_ex", refuse),
        mock.patch.object(socket, "create_connection", refuse),
        mock.patch.object(socket, "getaddrinfo", refuse),
    ):
        yield


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd_inpainting_dir(tmp_path_factory.mktemp("sd") / "tiny-sd-inpainting")


@pytest.fixture(scope="module")
def tiny_pipe(tiny_dir: Path) -> Any:
    with no_network():
        return load_inpaint_pipeline(tiny_dir, "cpu", fp16=False)


@pytest.fixture()
def copy_dir(tiny_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_dir, tmp_path / "copy"))


def _edit_json(path: Path, **changes: Any) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _inputs() -> tuple[Image.Image, Image.Image]:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    mask = np.zeros((256, 256), dtype=np.uint8)
    mask[64:192, 80:200] = 255
    return image, Image.fromarray(mask)


def _run(pipe: Any, seed: int) -> np.ndarray:
    image, mask = _inputs()
    result = pipe(
        prompt="a red car",
        image=image,
        mask_image=mask,
        num_inference_steps=2,
        guidance_scale=7.5,
        generator=torch.Generator().manual_seed(seed),
    ).images[0]
    assert isinstance(result, Image.Image) and result.mode == "RGB"
    return np.asarray(result)


# --------------------------------------------------------------------------- the tiny model


def test_tiny_folder_has_the_official_layout(tiny_dir: Path) -> None:
    expected = [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "tokenizer/merges.txt",
        "tokenizer/special_tokens_map.json",
        "tokenizer/tokenizer_config.json",
        "tokenizer/vocab.json",
        UNET_WEIGHTS,
        "unet/config.json",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
    ]
    found = sorted(p.relative_to(tiny_dir).as_posix() for p in tiny_dir.rglob("*") if p.is_file())
    assert found == sorted(expected)
    index = json.loads((tiny_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionInpaintPipeline"
    assert index["safety_checker"] == [None, None]
    assert index["requires_safety_checker"] is False
    unet = json.loads((tiny_dir / "unet/config.json").read_text())
    assert (unet["in_channels"], unet["out_channels"], unet["sample_size"]) == (9, 4, 32)


def test_tiny_metadata(tiny_dir: Path) -> None:
    metadata = verify_sd_inpainting_dir(tiny_dir)
    assert metadata == {
        "pipeline_class": "StableDiffusionInpaintPipeline",
        "is_sdxl": False,
        "native_resolution": 256,
        "vae_scale_factor": 8,
        "unet_in_channels": 9,
        "variant": "",
    }
    json.dumps(metadata)


def test_tiny_build_is_deterministic(tiny_dir: Path, tmp_path: Path) -> None:
    rng_before = torch.get_rng_state()
    same = build_tiny_sd_inpainting_dir(tmp_path / "same", seed=0)
    other = build_tiny_sd_inpainting_dir(tmp_path / "other", seed=1)
    assert torch.equal(torch.get_rng_state(), rng_before)
    for name in (UNET_WEIGHTS, "vae/diffusion_pytorch_model.safetensors"):
        assert (same / name).read_bytes() == (tiny_dir / name).read_bytes()
        assert (other / name).read_bytes() != (tiny_dir / name).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "same"]  # no staging left
    with pytest.raises(FileExistsError):
        build_tiny_sd_inpainting_dir(same)


def test_tokenizer_round_trip(tiny_dir: Path, tiny_pipe: Any) -> None:
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny_dir / "tokenizer")
    assert tokenizer.model_max_length == 77
    vocab_size = tiny_pipe.text_encoder.config.vocab_size
    assert len(tokenizer) == vocab_size
    ids = tokenizer("A red car, on the road!").input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert all(0 <= i < vocab_size for i in ids)
    assert tokenizer.convert_ids_to_tokens(ids[1:4]) == ["a</w>", "red</w>", "car</w>"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a red car , on the road !"
    # Unknown words fall back to byte symbols, never to <unk>.
    assert "zq" in tokenizer.decode(tokenizer("zqx").input_ids, skip_special_tokens=True)
    padded = tokenizer("a red car", padding="max_length", max_length=77, truncation=True)
    assert len(padded.input_ids) == 77


# --------------------------------------------------------------------------- loading, running


def test_loaded_pipeline(tiny_pipe: Any) -> None:
    assert type(tiny_pipe).__name__ == "StableDiffusionInpaintPipeline"
    assert tiny_pipe.safety_checker is None
    assert native_resolution(tiny_pipe) == 256
    assert tiny_pipe.unet.dtype == torch.float32
    assert tiny_pipe.device.type == "cpu"
    assert tiny_pipe._progress_bar_config == {"disable": True}


def test_run_shape_and_determinism(tiny_pipe: Any) -> None:
    first = _run(tiny_pipe, seed=0)
    assert first.shape == (256, 256, 3)
    assert np.array_equal(first, _run(tiny_pipe, seed=0))
    assert not np.array_equal(first, _run(tiny_pipe, seed=1))


def test_fp16_on_cpu_loads_float32(tiny_dir: Path) -> None:
    with no_network():
        pipe = load_inpaint_pipeline(tiny_dir, torch.device("cpu"), fp16=True)
    assert pipe.unet.dtype == torch.float32 and pipe.vae.dtype == torch.float32


def test_fp16_variant_only_folder_loads(copy_dir: Path) -> None:
    for weights in copy_dir.glob("*/*.safetensors"):
        weights.rename(weights.with_name(weights.stem + ".fp16.safetensors"))
    assert verify_sd_inpainting_dir(copy_dir)["variant"] == "fp16"
    with no_network():
        pipe = load_inpaint_pipeline(copy_dir, "cpu", fp16=False)
    assert native_resolution(pipe) == 256


def test_no_network_guard_is_effective() -> None:
    with no_network(), pytest.raises(AssertionError, match="network access attempted"):
        socket.create_connection(("huggingface.co", 443), timeout=1)


# --------------------------------------------------------------------------- rejections


def test_missing_unet_config_is_named(copy_dir: Path) -> None:
    (copy_dir / "unet/config.json").unlink()
    with pytest.raises(SdPipelineError, match=r"unet/config\.json: missing"):
        verify_sd_inpainting_dir(copy_dir)
    with pytest.raises(SdPipelineError, match=r"unet/config\.json"):
        load_inpaint_pipeline(copy_dir, "cpu", fp16=False)


def test_text_to_image_unet_is_rejected(copy_dir: Path) -> None:
    _edit_json(copy_dir / "unet/config.json", in_channels=4)
    with pytest.raises(SdPipelineError, match="in_channels is 4, an inpainting UNet takes 9"):
        verify_sd_inpainting_dir(copy_dir)


def test_missing_weights_are_named(copy_dir: Path) -> None:
    (copy_dir / "vae/diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(SdPipelineError, match=r"vae: no weights"):
        verify_sd_inpainting_dir(copy_dir)


def test_missing_component_folder_and_tokenizer_files(copy_dir: Path) -> None:
    (copy_dir / "tokenizer/merges.txt").unlink()
    with pytest.raises(SdPipelineError, match="tokenizer: no tokenizer files"):
        verify_sd_inpainting_dir(copy_dir)
    shutil.rmtree(copy_dir / "scheduler")
    with pytest.raises(SdPipelineError, match="scheduler: component folder missing"):
        verify_sd_inpainting_dir(copy_dir)


def test_other_pipeline_classes_are_rejected(copy_dir: Path) -> None:
    _edit_json(copy_dir / "model_index.json", _class_name="KandinskyV22InpaintPipeline")
    with pytest.raises(SdPipelineError, match="'KandinskyV22InpaintPipeline' is not a Stable"):
        verify_sd_inpainting_dir(copy_dir)
    (copy_dir / "model_index.json").unlink()
    with pytest.raises(SdPipelineError, match=r"model_index\.json: missing"):
        verify_sd_inpainting_dir(copy_dir)
    with pytest.raises(SdPipelineError, match="not a directory"):
        verify_sd_inpainting_dir(copy_dir / "nowhere")


def test_text_encoder_width_must_match_the_unet(copy_dir: Path) -> None:
    _edit_json(copy_dir / "unet/config.json", cross_attention_dim=48)
    with pytest.raises(SdPipelineError, match="cross_attention_dim 48"):
        verify_sd_inpainting_dir(copy_dir)


def test_sdxl_layout_is_accepted(copy_dir: Path) -> None:
    # SDXL inpainting: two text encoders whose widths add up to the UNet's cross-attention width.
    shutil.copytree(copy_dir / "text_encoder", copy_dir / "text_encoder_2")
    shutil.copytree(copy_dir / "tokenizer", copy_dir / "tokenizer_2")
    index = json.loads((copy_dir / "model_index.json").read_text())
    for key in ("safety_checker", "requires_safety_checker"):
        index.pop(key)
    index["_class_name"] = "StableDiffusionXLInpaintPipeline"
    index["text_encoder_2"] = ["transformers", "CLIPTextModelWithProjection"]
    index["tokenizer_2"] = ["transformers", "CLIPTokenizer"]
    (copy_dir / "model_index.json").write_text(json.dumps(index))
    _edit_json(copy_dir / "unet/config.json", cross_attention_dim=64, sample_size=128)
    metadata = verify_sd_inpainting_dir(copy_dir)
    assert metadata["is_sdxl"] is True
    assert metadata["pipeline_class"] == "StableDiffusionXLInpaintPipeline"
    assert metadata["native_resolution"] == 1024
    shutil.rmtree(copy_dir / "tokenizer_2")
    with pytest.raises(SdPipelineError, match="tokenizer_2: component folder missing"):
        verify_sd_inpainting_dir(copy_dir)

"""Reading, checking and writing the official big-lama folder layout."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from models.lama_checkpoint import (
    LamaCheckpointError,
    checkpoint_path,
    config_path,
    load_generator,
    read_generator_config,
    verify_lama_dir,
)
from models.lama_network import build_generator
from tests.conftest import LAMA_DATA_DIR
from tooling.tiny import (
    build_tiny_lama_dir,
    random_generator_state,
    tiny_lama_config,
    write_lama_dir,
)

BIG_LAMA_PARAMETERS = 50_975_875


@pytest.fixture()
def tiny_dir(tmp_path: Path) -> Path:
    return build_tiny_lama_dir(tmp_path / "big-lama", seed=0)


def read_checkpoint(model_dir: Path) -> dict[str, Any]:
    return torch.load(checkpoint_path(model_dir), map_location="cpu", weights_only=True)


def generator_part(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {
        k.removeprefix("generator."): v
        for k, v in checkpoint["state_dict"].items()
        if k.startswith("generator.")
    }


def rewrite_with_generator_state(
    source: Path, target: Path, state: dict[str, torch.Tensor]
) -> Path:
    config = OmegaConf.load(config_path(source))
    return write_lama_dir(target, config, state)


@pytest.mark.slow
def test_full_size_random_checkpoint_loads_and_runs(tmp_path: Path) -> None:
    manifest = json.loads((LAMA_DATA_DIR / "big_lama_generator_state_dict.json").read_text())
    config = OmegaConf.load(LAMA_DATA_DIR / "big_lama_config.yaml")
    with torch.device("meta"):
        meta_model = build_generator(config.generator)
    state = random_generator_state(meta_model, seed=1)
    rng = torch.Generator().manual_seed(2)
    extra = {
        f"discriminator.{key}": torch.rand(shape, generator=rng).to(getattr(torch, dtype))
        for key, shape, dtype in manifest["discriminator_keys_training_only"]
    }
    extra["val_evaluator.scores.ssim.window"] = torch.rand((1, 1, 11, 11), generator=rng)
    extra["val_evaluator.scores.lpips.model.net.lin0.model.1.weight"] = torch.rand((1, 64, 1, 1))
    extra["test_evaluator.scores.ssim.window"] = torch.rand((1, 1, 11, 11), generator=rng)
    model_dir = write_lama_dir(tmp_path / "big-lama", config, state, extra)

    metadata = verify_lama_dir(model_dir)
    assert metadata["num_parameters"] == BIG_LAMA_PARAMETERS
    assert metadata["n_blocks"] == 18 and metadata["ngf"] == 64
    assert metadata["num_skipped_keys"] == len(manifest["discriminator_keys_training_only"]) + 3

    model = load_generator(model_dir)
    for key in ("model.1.ffc.convl2l.weight", "model.5.conv1.ffc.convg2g.fu.bn.running_var"):
        assert torch.equal(model.state_dict()[key], state[key])
    x = torch.rand(1, 4, 64, 64, generator=rng)
    with torch.inference_mode():
        y = model(x)
    assert y.shape == (1, 3, 64, 64)
    assert 0 <= y.min().item() and y.max().item() <= 1


def test_missing_generator_key_is_named(tiny_dir: Path, tmp_path: Path) -> None:
    state = generator_part(read_checkpoint(tiny_dir))
    del state["model.5.conv1.ffc.convg2g.fu.conv_layer.weight"]
    broken = rewrite_with_generator_state(tiny_dir, tmp_path / "broken", state)
    with pytest.raises(LamaCheckpointError) as info:
        load_generator(broken)
    message = str(info.value)
    assert "missing" in message
    assert "generator.model.5.conv1.ffc.convg2g.fu.conv_layer.weight" in message
    assert str(checkpoint_path(broken)) in message
    with pytest.raises(LamaCheckpointError, match="conv_layer.weight"):
        verify_lama_dir(broken)


def test_misshapen_generator_key_names_both_shapes(tiny_dir: Path, tmp_path: Path) -> None:
    state = generator_part(read_checkpoint(tiny_dir))
    key = "model.1.ffc.convl2l.weight"
    expected = tuple(state[key].shape)
    state[key] = torch.zeros(expected[0], 3, 7, 7)
    broken = rewrite_with_generator_state(tiny_dir, tmp_path / "broken", state)
    for check in (load_generator, verify_lama_dir):
        with pytest.raises(LamaCheckpointError) as info:
            check(broken)
        message = str(info.value)
        assert f"generator.{key}" in message
        assert str(expected) in message and str((expected[0], 3, 7, 7)) in message


def test_unexpected_generator_key_is_named(tiny_dir: Path, tmp_path: Path) -> None:
    state = generator_part(read_checkpoint(tiny_dir))
    state["model.99.weight"] = torch.zeros(1)
    broken = rewrite_with_generator_state(tiny_dir, tmp_path / "broken", state)
    with pytest.raises(LamaCheckpointError, match=r"unexpected.*generator\.model\.99\.weight"):
        load_generator(broken)


def test_non_generator_keys_are_ignored(tiny_dir: Path, tmp_path: Path) -> None:
    checkpoint = read_checkpoint(tiny_dir)
    skipped = [k for k in checkpoint["state_dict"] if not k.startswith("generator.")]
    assert any(k.startswith("discriminator.") for k in skipped)
    assert any(k.startswith("val_evaluator.") for k in skipped)
    state = generator_part(checkpoint)
    extra = {
        "discriminator.model0.0.weight": torch.rand(64, 3, 4, 4),
        "loss_resnet_pl.impl.conv1.weight": torch.rand(2, 2),
        "generator_ema.model.1.ffc.convl2l.weight": torch.rand(1),  # no "generator." prefix
        "test_evaluator.scores.fid.model.Conv2d_1a_3x3.conv.weight": torch.rand(3, 3),
    }
    config = OmegaConf.load(config_path(tiny_dir))
    model_dir = write_lama_dir(tmp_path / "extra", config, state, extra)
    model = load_generator(model_dir)
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert verify_lama_dir(model_dir)["num_skipped_keys"] == len(extra)


def test_tiny_dir_round_trip_and_metadata(tiny_dir: Path, tmp_path: Path) -> None:
    assert config_path(tiny_dir).is_file()
    assert (tiny_dir / "models" / "best.ckpt").is_file()
    checkpoint = read_checkpoint(tiny_dir)
    assert {"epoch", "global_step", "pytorch-lightning_version", "state_dict"} <= set(checkpoint)

    model = load_generator(tiny_dir)
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in generator_part(checkpoint).items())

    metadata = verify_lama_dir(tiny_dir)
    assert metadata["kind"] == "ffc_resnet"
    assert (metadata["ngf"], metadata["n_downsampling"], metadata["n_blocks"]) == (8, 3, 2)
    assert metadata["num_parameters"] == sum(p.numel() for p in model.parameters())
    assert metadata["num_generator_keys"] == len(loaded)
    assert metadata["num_skipped_keys"] == 4
    assert metadata["generator_config"] == read_generator_config(tiny_dir)
    assert metadata["generator_config"]["resnet_conv_kwargs"]["ratio_gout"] == 0.75
    json.dumps(metadata)  # store metadata must be plain data

    again = read_checkpoint(build_tiny_lama_dir(tmp_path / "again", seed=0))
    other = read_checkpoint(build_tiny_lama_dir(tmp_path / "other", seed=1))
    key = "generator.model.1.ffc.convl2l.weight"
    assert torch.equal(again["state_dict"][key], checkpoint["state_dict"][key])
    assert not torch.equal(other["state_dict"][key], checkpoint["state_dict"][key])


def test_tiny_config_is_big_lama_with_a_small_generator() -> None:
    config = tiny_lama_config()
    assert config.generator.n_blocks == 2 and config.generator.ngf == 8
    assert config.discriminator.kind == "pix2pixhd_nlayer"
    raw = OmegaConf.to_container(config.generator, resolve=False)
    assert isinstance(raw, dict)
    assert raw["resnet_conv_kwargs"]["ratio_gout"] == "${generator.resnet_conv_kwargs.ratio_gin}"


def test_unresolvable_interpolations_outside_generator_do_not_matter(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TORCH_HOME", raising=False)
    assert "${env:TORCH_HOME}" in config_path(tiny_dir).read_text()
    with pytest.raises(OmegaConfBaseException):
        OmegaConf.to_container(OmegaConf.load(config_path(tiny_dir)), resolve=True)
    assert read_generator_config(tiny_dir)["downsample_conv_kwargs"]["ratio_gout"] == 0
    assert isinstance(load_generator(tiny_dir), torch.nn.Module)


def test_lightning_hyper_parameters_need_the_pickle_fallback(tiny_dir: Path) -> None:
    checkpoint = read_checkpoint(tiny_dir)
    checkpoint["hyper_parameters"] = OmegaConf.load(config_path(tiny_dir))
    torch.save(checkpoint, checkpoint_path(tiny_dir))
    with pytest.raises(pickle.UnpicklingError):
        torch.load(checkpoint_path(tiny_dir), map_location="cpu", weights_only=True)
    assert isinstance(load_generator(tiny_dir), torch.nn.Module)
    assert verify_lama_dir(tiny_dir)["num_skipped_keys"] == 4


def test_missing_files_and_bad_configs_are_reported(tiny_dir: Path) -> None:
    checkpoint_path(tiny_dir).rename(tiny_dir / "elsewhere.ckpt")
    with pytest.raises(LamaCheckpointError, match="best.ckpt"):
        load_generator(tiny_dir)
    (tiny_dir / "elsewhere.ckpt").rename(checkpoint_path(tiny_dir))

    text = config_path(tiny_dir).read_text()
    config_path(tiny_dir).write_text(text.replace("kind: ffc_resnet", "kind: pix2pixhd_global"))
    with pytest.raises(LamaCheckpointError, match="pix2pixhd_global"):
        verify_lama_dir(tiny_dir)
    config_path(tiny_dir).unlink()
    with pytest.raises(LamaCheckpointError, match="config.yaml"):
        load_generator(tiny_dir)


def test_a_plain_state_dict_is_not_a_lightning_checkpoint(tiny_dir: Path) -> None:
    state = generator_part(read_checkpoint(tiny_dir))
    torch.save(state, checkpoint_path(tiny_dir))
    with pytest.raises(LamaCheckpointError, match="state_dict"):
        load_generator(tiny_dir)


def test_write_refuses_generator_keys_in_extra_state(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="generator"):
        write_lama_dir(tmp_path, {"generator": {}}, {}, {"generator.x": torch.zeros(1)})

"""Model store: which entries the server serves, and the import command's checks."""

from __future__ import annotations

from pathlib import Path

import bentoml
import pytest
import torch

from config.settings import Settings
from models import store
from models.sam_checkpoint import SAM_ARCHITECTURES
from tests.unit.conftest import import_models
from tooling import model_import
from tooling.tiny import build_tiny_lama_dir, write_random_sam_checkpoint


def _entry(name: str, kind: str, *, demo: bool = False, **metadata: str) -> str:
    labels = {"kind": kind, "demo": "true" if demo else "false"}
    with bentoml.models.create(name, labels=labels, metadata=metadata) as model:
        pass
    return str(model.tag)


def _settings(**values: str) -> Settings:
    return Settings(_env_file=None, **values)


def test_empty_store_resolves_to_the_tiny_names(model_store: Path) -> None:
    assert store.resolve_tags(_settings(), gpu=False) == {
        "sam": "sam-tiny:latest",
        "lama": "lama-tiny:latest",
        "sd": "sd-tiny:latest",
        "sam3": "sam3-tiny:latest",
    }


def test_real_weights_win_over_demo_models(model_store: Path) -> None:
    _entry("sam-tiny", "sam", demo=True, model_type="tiny")
    real_lama = _entry("big-lama", "lama")
    demo_sd = _entry("sd-tiny", "sd", demo=True)
    tags = store.resolve_tags(_settings(), gpu=False)
    assert tags["lama"] == real_lama
    assert tags["sd"] == demo_sd
    assert tags["sam"].startswith("sam-tiny:")


@pytest.mark.parametrize(("gpu", "expected"), [(False, "sam-vit_b"), (True, "sam-vit_h")])
def test_sam_preference_depends_on_the_device(model_store: Path, gpu: bool, expected: str) -> None:
    _entry("sam-vit_h", "sam", model_type="vit_h")
    _entry("sam-vit_b", "sam", model_type="vit_b")
    assert store.resolve_tags(_settings(), gpu=gpu)["sam"].startswith(f"{expected}:")


def test_newest_entry_of_a_kind_wins(model_store: Path) -> None:
    _entry("sd-inpainting", "sd")
    newest = _entry("sd-xl-inpainting", "sd")
    assert store.resolve_tags(_settings(), gpu=False)["sd"] == newest


def test_settings_name_the_tags_explicitly(model_store: Path) -> None:
    _entry("sam-vit_b", "sam", model_type="vit_b")
    tags = store.resolve_tags(_settings(sam_model="my-sam:v1"), gpu=False)
    assert tags["sam"] == "my-sam:v1"


def test_prepare_refuses_a_missing_named_model_instead_of_serving_a_demo(model_store: Path) -> None:
    with pytest.raises(LookupError, match="SAM_MODEL=sam-vit_h:latest"):
        model_import.prepare_serving(_settings(sam_model="sam-vit_h:latest"))
    assert bentoml.models.list() == []


def test_import_sam_stores_the_official_file_and_its_architecture(
    model_store: Path, tmp_path: Path
) -> None:
    checkpoint = write_random_sam_checkpoint(tmp_path / "sam.pth", SAM_ARCHITECTURES["tiny"])
    tag = model_import.import_sam(checkpoint, "tiny", "sam-test", demo=True)
    stored = bentoml.models.get(tag)
    assert (Path(stored.path) / "sam.pth").read_bytes() == checkpoint.read_bytes()
    assert stored.info.metadata["architecture"]["encoder_embed_dim"] == 64
    assert stored.info.labels == {"kind": "sam", "demo": "true"}
    assert store.is_demo_tag(tag)


def test_import_lama_keeps_the_big_lama_layout(model_store: Path, tmp_path: Path) -> None:
    folder = build_tiny_lama_dir(tmp_path / "big-lama")
    tag = model_import.import_lama(folder, "lama-test")
    stored = Path(bentoml.models.get(tag).path) / store.LAMA_FOLDER
    assert (stored / "config.yaml").is_file() and (stored / "models" / "best.ckpt").is_file()
    assert not store.is_demo_tag(tag)


def test_import_command_names_the_offending_key_and_shapes(tmp_path: Path) -> None:
    checkpoint = write_random_sam_checkpoint(tmp_path / "sam.pth", SAM_ARCHITECTURES["tiny"])
    result = import_models(["sam", "--type", "vit_b", "--checkpoint", str(checkpoint)], tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert "image_encoder.pos_embed" in result.stderr
    assert "(1, 64, 64, 768)" in result.stderr and "(1, 64, 64, 64)" in result.stderr
    assert "Traceback" not in result.stderr


def test_import_command_rejects_a_misshapen_lama_key(tmp_path: Path) -> None:
    folder = build_tiny_lama_dir(tmp_path / "big-lama")
    checkpoint = torch.load(folder / "models" / "best.ckpt", weights_only=False)
    key = "generator.model.1.ffc.convl2l.weight"
    checkpoint["state_dict"][key] = torch.zeros(1, 2, 3, 3)
    torch.save(checkpoint, folder / "models" / "best.ckpt")
    result = import_models(["lama", "--checkpoint", str(folder)], tmp_path)
    assert result.returncode == 1
    assert "model.1.ffc.convl2l.weight" in result.stderr and "(1, 2, 3, 3)" in result.stderr


def test_import_command_names_a_missing_file(tmp_path: Path) -> None:
    result = import_models(["sd", "--model", str(tmp_path / "nowhere")], tmp_path)
    assert result.returncode == 1
    assert "nowhere" in result.stderr

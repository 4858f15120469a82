"""SAM 3 in facebook/sam3's layout: the tiny builder, the key-by-key check and the import."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import bentoml
import pytest
from safetensors.torch import load_file, save_file
from transformers import Sam3Config

from models import store
from models.sam3_checkpoint import (
    Sam3CheckpointError,
    expected_shapes,
    load_sam3,
    verify_sam3_dir,
)
from tests.unit.conftest import import_models
from tooling import model_import
from tooling.tiny import build_tiny_sam3_dir, write_random_sam3_dir

OFFICIAL_FILES = {
    "config.json",
    "model.safetensors",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
}
# Opt in: writes the 3.4 GB full-size random checkpoint (about a minute and 8 GB of RAM here).
FULL_SIZE_ENV = "INPAINT_TEST_SAM3_FULL"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sam3_dir(tmp_path_factory.mktemp("sam3") / "sam3-tiny")


def test_tiny_sam3_is_in_the_official_layout_and_loads(tiny_dir: Path) -> None:
    assert OFFICIAL_FILES <= {p.name for p in tiny_dir.iterdir()}
    metadata = verify_sam3_dir(tiny_dir)
    assert metadata["model_type"] == "sam3" and metadata["num_parameters"] > 100_000
    model, processor = load_sam3(tiny_dir, "cpu")
    assert type(model).__name__ == "Sam3Model" and not model.training
    assert processor.image_processor.size["height"] == 112


def test_tiny_builder_is_deterministic(tiny_dir: Path, tmp_path: Path) -> None:
    again = build_tiny_sam3_dir(tmp_path / "again")
    first, second = (
        load_file(tiny_dir / "model.safetensors"),
        load_file(again / "model.safetensors"),
    )
    assert first.keys() == second.keys()
    assert all((first[k] == second[k]).all() for k in first)


def test_official_full_size_key_set_on_meta() -> None:
    shapes = expected_shapes(Sam3Config())
    # facebook/sam3's names and shapes: ViT-L/14 at 1008 px, CLIP text tower 1024 wide.
    assert shapes["vision_encoder.backbone.embeddings.patch_embeddings.projection.weight"] == (
        1024,
        3,
        14,
        14,
    )
    assert shapes["text_encoder.text_model.embeddings.token_embedding.weight"] == (49408, 1024)
    assert shapes["text_projection.weight"] == (256, 1024)
    assert "vision_encoder.backbone.layers.31.mlp.fc2.weight" in shapes
    assert "detr_decoder.layers.5.cross_attn.o_proj.weight" in shapes or any(
        k.startswith("detr_decoder.layers.5.") for k in shapes
    )


def _without(folder: Path, key: str, dest: Path) -> Path:
    shutil.copytree(folder, dest)
    state = load_file(folder / "model.safetensors")
    del state[key]
    save_file(state, dest / "model.safetensors", metadata={"format": "pt"})
    return dest


def test_a_missing_key_is_refused_with_its_name(tiny_dir: Path, tmp_path: Path) -> None:
    key = "detr_decoder.layers.0.self_attn.q_proj.weight"
    assert key in load_file(tiny_dir / "model.safetensors")
    broken = _without(tiny_dir, key, tmp_path / "broken")
    with pytest.raises(Sam3CheckpointError, match=f"missing keys: {key}"):
        verify_sam3_dir(broken)
    result = import_models(["sam3", "--checkpoint", str(broken)], tmp_path / "home")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and key in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_processor_file_is_named(tiny_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(tiny_dir, tmp_path / "s")
    (tmp_path / "s" / "processor_config.json").unlink()
    with pytest.raises(Sam3CheckpointError, match="missing processor_config.json"):
        verify_sam3_dir(tmp_path / "s")


def test_import_command_stores_sam3_and_the_store_serves_it(tiny_dir: Path, tmp_path: Path) -> None:
    result = import_models(["sam3", "--checkpoint", str(tiny_dir), "--name", "sam3-x"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("sam3-x:")


def test_import_sam3_keeps_the_layout(model_store: Path, tiny_dir: Path) -> None:
    tag = model_import.import_sam3(tiny_dir, "sam3-test")
    stored = Path(bentoml.models.get(tag).path) / store.SAM3_FOLDER
    assert OFFICIAL_FILES <= {p.name for p in stored.iterdir()}
    assert bentoml.models.get(tag).info.labels["kind"] == "sam3"
    assert store.best_entry("sam3", gpu=False) == tag


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get(FULL_SIZE_ENV) != "1", reason=f"set {FULL_SIZE_ENV}=1 (3.4 GB, about a minute)"
)
def test_full_size_random_checkpoint_imports(model_store: Path, tmp_path: Path) -> None:
    folder = write_random_sam3_dir(tmp_path / "sam3-full", {})
    metadata = verify_sam3_dir(folder)
    assert metadata["num_parameters"] > 800_000_000
    tag = model_import.import_sam3(folder, "sam3-full")
    assert bentoml.models.get(tag).info.metadata["num_parameters"] == metadata["num_parameters"]

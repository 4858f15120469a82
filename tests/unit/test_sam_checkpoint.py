"""SAM architectures, checkpoint verification/loading, and random checkpoints."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor, sam_model_registry
from segment_anything.build_sam import _build_sam

from models.sam_checkpoint import (
    SAM_ARCHITECTURES,
    SamArchitecture,
    SamCheckpointError,
    build_sam,
    check_sam_state_dict,
    expected_state_dict_shapes,
    get_architecture,
    load_sam,
    num_parameters,
    verify_sam_checkpoint,
)
from tooling.tiny import write_random_sam_checkpoint

TINY = SAM_ARCHITECTURES["tiny"]
# Parameter counts of segment_anything's builders (image encoder + prompt encoder + decoder).
EXPECTED_PARAMETERS = {
    "vit_h": 641_090_608,
    "vit_l": 312_342_832,
    "vit_b": 93_735_472,
    "tiny": 5_092_976,
}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_sam_checkpoint(tmp_path_factory.mktemp("sam") / "sam_tiny.pth", TINY)


def _meta_state_dict(model_type: str) -> dict[str, torch.Tensor]:
    return build_sam(SAM_ARCHITECTURES[model_type], device="meta").state_dict()


def _save(state: object, path: Path) -> Path:
    torch.save(state, path)
    return path


# --------------------------------------------------------------------------- architectures


@pytest.mark.parametrize("model_type", ["vit_h", "vit_l", "vit_b"])
def test_architecture_table_matches_the_package_builders(model_type: str) -> None:
    with torch.device("meta"):
        reference = sam_model_registry[model_type]()
    ours = build_sam(SAM_ARCHITECTURES[model_type], device="meta")
    ref_shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert expected_state_dict_shapes(SAM_ARCHITECTURES[model_type]) == ref_shapes
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == ref_shapes
    assert not ours.training


@pytest.mark.parametrize("model_type", list(EXPECTED_PARAMETERS))
def test_parameter_counts(model_type: str) -> None:
    arch = SAM_ARCHITECTURES[model_type]
    assert num_parameters(arch) == EXPECTED_PARAMETERS[model_type]
    model = build_sam(arch, device="meta")
    assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMETERS[model_type]


def test_vit_h_and_vit_l_layouts_on_meta() -> None:
    vit_h = expected_state_dict_shapes(SAM_ARCHITECTURES["vit_h"])
    vit_l = expected_state_dict_shapes(SAM_ARCHITECTURES["vit_l"])
    assert (len(vit_h), len(vit_l)) == (594, 482)
    assert vit_h["image_encoder.pos_embed"] == (1, 64, 64, 1280)
    assert vit_l["image_encoder.pos_embed"] == (1, 64, 64, 1024)
    # Relative positions span the whole 64x64 grid in global blocks, a 14x14 window elsewhere.
    assert vit_h["image_encoder.blocks.7.attn.rel_pos_h"] == (127, 80)
    assert vit_h["image_encoder.blocks.6.attn.rel_pos_h"] == (27, 80)
    assert vit_l["image_encoder.blocks.23.attn.rel_pos_w"] == (127, 64)
    assert "image_encoder.blocks.31.mlp.lin2.weight" in vit_h
    assert "image_encoder.blocks.24.mlp.lin2.weight" not in vit_l
    # Decoder and prompt encoder are shared by every size.
    assert vit_h["mask_decoder.iou_token.weight"] == vit_l["mask_decoder.iou_token.weight"]


@pytest.mark.parametrize("model_type", ["vit_h", "vit_l"])
def test_check_accepts_meta_state_dicts_of_the_big_models(model_type: str) -> None:
    state = _meta_state_dict(model_type)
    n = check_sam_state_dict(state, SAM_ARCHITECTURES[model_type])
    assert n == EXPECTED_PARAMETERS[model_type]


def test_check_rejects_vit_l_as_vit_h_with_shapes() -> None:
    with pytest.raises(SamCheckpointError) as info:
        check_sam_state_dict(_meta_state_dict("vit_l"), SAM_ARCHITECTURES["vit_h"], "vit_l.pth")
    message = str(info.value)
    assert message.startswith("vit_l.pth is not a SAM vit_h checkpoint")
    assert "layout matches SAM vit_l" in message
    assert "image_encoder.pos_embed: expected (1, 64, 64, 1280), found (1, 64, 64, 1024)" in message
    assert "missing key(s): image_encoder.blocks.24." in message


def test_architecture_metadata_round_trip() -> None:
    for arch in SAM_ARCHITECTURES.values():
        data = json.loads(json.dumps(arch.to_metadata()))
        assert SamArchitecture.from_metadata(data) == arch
    assert TINY.to_metadata()["encoder_global_attn_indexes"] == [1]


@pytest.mark.parametrize(
    "data",
    [
        {k: v for k, v in TINY.to_metadata().items() if k != "encoder_depth"},
        {**TINY.to_metadata(), "encoder_embed_dim": "wide"},
        {**TINY.to_metadata(), "encoder_num_heads": 3},  # 64 is not divisible by 3
        {**TINY.to_metadata(), "encoder_global_attn_indexes": [2]},  # depth is 2
    ],
    ids=["missing-field", "not-a-number", "heads", "global-index"],
)
def test_architecture_metadata_rejects_nonsense(data: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SamArchitecture.from_metadata(data)


def test_model_type_names() -> None:
    assert get_architecture("default") == SAM_ARCHITECTURES["vit_h"]
    with pytest.raises(SamCheckpointError, match="unknown SAM model type 'vit_x'"):
        get_architecture("vit_x")


# --------------------------------------------------------------------------- tiny files


def test_tiny_round_trip(tiny_checkpoint: Path) -> None:
    metadata = verify_sam_checkpoint(tiny_checkpoint, "tiny")
    assert metadata == {
        "model_type": "tiny",
        "architecture": TINY.to_metadata(),
        "num_parameters": EXPECTED_PARAMETERS["tiny"],
    }
    json.dumps(metadata)

    sam = load_sam(tiny_checkpoint, TINY, "cpu")
    assert not sam.training
    assert not any(p.requires_grad for p in sam.parameters())
    predictor = SamPredictor(sam)
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    predictor.set_image(image)
    assert predictor.features.shape == (1, 256, 64, 64)
    masks, scores, low_res = predictor.predict(
        point_coords=np.array([[20, 30]]), point_labels=np.array([1]), multimask_output=True
    )
    assert masks.shape == (3, 48, 64) and masks.dtype == bool
    assert scores.shape == (3,) and np.isfinite(scores).all()
    assert low_res.shape == (3, 256, 256)


def test_file_is_an_official_plain_state_dict(tiny_checkpoint: Path) -> None:
    state = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    assert isinstance(state, dict)
    assert all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    assert {k: tuple(v.shape) for k, v in state.items()} == expected_state_dict_shapes(TINY)
    assert all(v.dtype == torch.float32 for v in state.values())


def test_load_sam_matches_the_package_loading(tiny_checkpoint: Path) -> None:
    # segment_anything's own way: build with random init, then load_state_dict.
    reference = _build_sam(64, 2, 2, [1])
    reference.load_state_dict(torch.load(tiny_checkpoint, map_location="cpu"))
    ours = load_sam(tiny_checkpoint, TINY)
    ref_state = reference.state_dict()
    for key, value in ours.state_dict().items():
        assert torch.equal(value, ref_state[key]), key
    assert torch.equal(ours.pixel_mean, reference.pixel_mean)
    assert torch.equal(ours.pixel_std, reference.pixel_std)


def test_random_checkpoints_are_deterministic_and_leave_the_global_rng(tmp_path: Path) -> None:
    rng_before = torch.get_rng_state()
    a = torch.load(write_random_sam_checkpoint(tmp_path / "a.pth", TINY, seed=3))
    b = torch.load(write_random_sam_checkpoint(tmp_path / "b.pth", TINY, seed=3))
    c = torch.load(write_random_sam_checkpoint(tmp_path / "c.pth", TINY, seed=4))
    assert torch.equal(torch.get_rng_state(), rng_before)
    key = "image_encoder.patch_embed.proj.weight"
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a[key], c[key])
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_wrong_model_type_names_a_key_and_shapes(tiny_checkpoint: Path) -> None:
    with pytest.raises(SamCheckpointError) as info:
        verify_sam_checkpoint(tiny_checkpoint, "vit_b")
    message = str(info.value)
    assert str(tiny_checkpoint) in message
    assert "is not a SAM vit_b checkpoint (its layout matches SAM tiny)" in message
    assert "image_encoder.pos_embed: expected (1, 64, 64, 768), found (1, 64, 64, 64)" in message
    with pytest.raises(SamCheckpointError, match="expected"):
        load_sam(tiny_checkpoint, SAM_ARCHITECTURES["vit_b"])


def test_missing_key_is_named(tiny_checkpoint: Path, tmp_path: Path) -> None:
    state = torch.load(tiny_checkpoint)
    del state["mask_decoder.iou_token.weight"]
    path = _save(state, tmp_path / "missing.pth")
    with pytest.raises(SamCheckpointError) as info:
        verify_sam_checkpoint(path, "tiny")
    assert "1 missing key(s): mask_decoder.iou_token.weight" in str(info.value)
    assert "unexpected" not in str(info.value)
    with pytest.raises(SamCheckpointError, match="mask_decoder.iou_token.weight"):
        load_sam(path, TINY)


def test_extra_key_is_named(tiny_checkpoint: Path, tmp_path: Path) -> None:
    state = torch.load(tiny_checkpoint)
    state["image_encoder.extra.weight"] = torch.zeros(3)
    path = _save(state, tmp_path / "extra.pth")
    with pytest.raises(SamCheckpointError) as info:
        verify_sam_checkpoint(path, "tiny")
    assert "1 unexpected key(s): image_encoder.extra.weight" in str(info.value)
    assert "missing" not in str(info.value)


def test_misshapen_key_is_named(tiny_checkpoint: Path, tmp_path: Path) -> None:
    state = torch.load(tiny_checkpoint)
    state["mask_decoder.iou_token.weight"] = torch.zeros(2, 256)
    path = _save(state, tmp_path / "shape.pth")
    with pytest.raises(SamCheckpointError, match=r"iou_token.weight: expected \(1, 256\), found"):
        verify_sam_checkpoint(path, "tiny")


def test_wrapped_state_dict_is_rejected(tiny_checkpoint: Path, tmp_path: Path) -> None:
    path = _save({"model": torch.load(tiny_checkpoint), "epoch": 3}, tmp_path / "wrapped.pth")
    with pytest.raises(SamCheckpointError, match="wrapped under 'model'"):
        verify_sam_checkpoint(path, "tiny")


def test_unreadable_and_absent_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(SamCheckpointError, match="garbage.pth: not a readable PyTorch checkpoint"):
        verify_sam_checkpoint(garbage, "tiny")
    with pytest.raises(SamCheckpointError, match="absent.pth: SAM checkpoint file not found"):
        verify_sam_checkpoint(tmp_path / "absent.pth", "tiny")
    tensor_only = _save(torch.zeros(3), tmp_path / "tensor.pth")
    with pytest.raises(SamCheckpointError, match="found Tensor"):
        verify_sam_checkpoint(tensor_only, "tiny")


class _Payload:
    """Not a tensor type: a weights-only load must refuse to build it."""


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = _save({"image_encoder.pos_embed": _Payload()}, tmp_path / "pickle.pth")
    with pytest.raises(SamCheckpointError, match="pickle.pth: not a readable PyTorch checkpoint"):
        verify_sam_checkpoint(path, "tiny")


def test_legacy_serialization_is_accepted(tiny_checkpoint: Path, tmp_path: Path) -> None:
    path = tmp_path / "legacy.pth"
    torch.save(torch.load(tiny_checkpoint), path, _use_new_zipfile_serialization=False)
    assert verify_sam_checkpoint(path, "tiny")["model_type"] == "tiny"
    reloaded = load_sam(path, TINY).state_dict()
    original = torch.load(tiny_checkpoint)
    assert all(torch.equal(reloaded[k], v) for k, v in original.items())


# --------------------------------------------------------------------------- full size


# The encoder forward of vit_b takes 30-50 s on this 2-core machine: opt in with this variable.
FULL_FORWARD_ENV = "INPAINT_TEST_SAM_VIT_B_FORWARD"


@pytest.fixture(scope="module")
def vit_b_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sam_vit_b") / "sam_vit_b.pth"
    return write_random_sam_checkpoint(path, SAM_ARCHITECTURES["vit_b"])


@pytest.mark.slow
def test_full_size_vit_b_random_checkpoint(vit_b_checkpoint: Path) -> None:
    metadata = verify_sam_checkpoint(vit_b_checkpoint, "vit_b")
    assert metadata["num_parameters"] == EXPECTED_PARAMETERS["vit_b"]
    sam = load_sam(vit_b_checkpoint, SAM_ARCHITECTURES["vit_b"], "cpu")
    # The package's own loader accepts the file and sees the same weights.
    reference = sam_model_registry["vit_b"](checkpoint=str(vit_b_checkpoint)).state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in sam.state_dict().items())


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get(FULL_FORWARD_ENV) != "1", reason=f"set {FULL_FORWARD_ENV}=1 (30-50 s on CPU)"
)
def test_full_size_vit_b_encoder_forward(vit_b_checkpoint: Path) -> None:
    sam = load_sam(vit_b_checkpoint, SAM_ARCHITECTURES["vit_b"], "cpu")
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    with torch.inference_mode():
        embedding = sam.image_encoder(x)
    print(f"vit_b encoder forward at 1024x1024: {time.perf_counter() - start:.1f} s")
    assert embedding.shape == (1, 256, 64, 64)
    assert torch.isfinite(embedding).all()

"""The project's LaMa generator against the official big-lama state-dict layout."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from models.lama_checkpoint import PACKAGED_BIG_LAMA_CONFIG
from models.lama_network import FFCResNetGenerator, FourierUnit, SpectralTransform, build_generator
from tests.conftest import LAMA_DATA_DIR
from tooling.tiny import random_generator_state, tiny_lama_config


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return json.loads((LAMA_DATA_DIR / "big_lama_generator_state_dict.json").read_text())


@pytest.fixture(scope="module")
def big_lama_on_meta() -> FFCResNetGenerator:
    config = OmegaConf.load(LAMA_DATA_DIR / "big_lama_config.yaml")
    with torch.device("meta"):
        return build_generator(config.generator)


def tiny_generator(seed: int = 0, **generator_overrides: Any) -> FFCResNetGenerator:
    config = tiny_lama_config()
    for key, value in generator_overrides.items():
        config.generator[key] = value
    with torch.device("meta"):
        model = build_generator(config.generator)
    model.load_state_dict(random_generator_state(model, seed), assign=True)
    return model.eval()


def test_state_dict_matches_official_big_lama(
    manifest: dict[str, Any], big_lama_on_meta: FFCResNetGenerator
) -> None:
    got = {
        key: (list(value.shape), str(value.dtype).removeprefix("torch."))
        for key, value in big_lama_on_meta.state_dict().items()
    }
    expected = {key: (shape, dtype) for key, shape, dtype in manifest["keys"]}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    different = [
        f"{key}: expected {expected[key]}, got {got[key]}"
        for key in sorted(set(expected) & set(got))
        if expected[key] != got[key]
    ]
    assert not (missing or unexpected or different), (
        f"missing {missing[:10]} ({len(missing)}), unexpected {unexpected[:10]} "
        f"({len(unexpected)}), different {different[:10]} ({len(different)})"
    )
    assert len(got) == manifest["num_keys"] == 989


def test_parameter_and_buffer_counts(
    manifest: dict[str, Any], big_lama_on_meta: FFCResNetGenerator
) -> None:
    assert sum(p.numel() for p in big_lama_on_meta.parameters()) == manifest["num_parameters"]
    assert sum(b.numel() for b in big_lama_on_meta.buffers()) == manifest["num_buffer_elements"]


def test_packaged_config_is_the_official_one(manifest: dict[str, Any]) -> None:
    shared = LAMA_DATA_DIR / "big_lama_config.yaml"
    assert PACKAGED_BIG_LAMA_CONFIG.read_bytes() == shared.read_bytes()
    generator = OmegaConf.load(PACKAGED_BIG_LAMA_CONFIG).generator
    assert OmegaConf.to_container(generator, resolve=True) == manifest["config"]


def test_tiny_forward_shape_and_range() -> None:
    model = tiny_generator()
    x = torch.rand(1, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        y = model(x)
    assert y.shape == (1, 3, 64, 64)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()
    assert 0 <= y.min().item() and y.max().item() <= 1
    assert y.std().item() > 0  # not a constant image


def test_generator_input_side_limit() -> None:
    assert tiny_generator().min_input_side == 16
    with torch.inference_mode():
        assert tiny_generator()(torch.rand(1, 4, 16, 24)).shape == (1, 3, 16, 24)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "pix2pixhd_global"}, "ffc_resnet"),
        ({"kind": None}, "ffc_resnet"),
        ({"norm_layer": "bn"}, "norm_layer"),
        ({"resnet_conv_kwargs": {"ratio_gin": 0.75, "ratio_gout": 0.75, "gated": True}}, "gated"),
        ({"resnet_conv_kwargs": {"ratio_gin": 0.75, "bogus": 1}}, "bogus"),
        ({"add_out_act": "relu"}, "add_out_act"),
    ],
)
def test_bad_generator_configs_are_rejected(change: dict[str, Any], message: str) -> None:
    config = OmegaConf.to_container(tiny_lama_config().generator, resolve=True)
    assert isinstance(config, dict)
    config.update(change)
    with pytest.raises(ValueError, match=message):
        build_generator(config)


def test_features_at_their_off_value_are_accepted() -> None:
    config = OmegaConf.to_container(tiny_lama_config().generator, resolve=True)
    assert isinstance(config, dict)
    config["resnet_conv_kwargs"].update(gated=False, use_se=False, spatial_scale_factor=None)
    assert isinstance(build_generator(config), FFCResNetGenerator)


def test_fourier_unit_channel_layout_matches_reference_formula() -> None:
    """Real and imaginary parts are interleaved per channel (c0.re, c0.im, c1.re, ...): the
    reference stacks them on a last axis, permutes (0, 1, 4, 2, 3) and views."""
    torch.manual_seed(0)
    unit = FourierUnit(3, 3).eval()
    x = torch.randn(2, 3, 8, 10)
    spectrum = torch.fft.rfftn(x, dim=(-2, -1), norm="ortho")
    stacked = torch.stack((spectrum.real, spectrum.imag), dim=-1).permute(0, 1, 4, 2, 3)
    stacked = stacked.contiguous().view(2, -1, 8, 6)
    with torch.inference_mode():
        z = unit.relu(unit.bn(unit.conv_layer(stacked)))
        z = z.view(2, -1, 2, 8, 6).permute(0, 1, 3, 4, 2).contiguous()
        expected = torch.fft.irfftn(
            torch.complex(z[..., 0], z[..., 1]), s=(8, 10), dim=(-2, -1), norm="ortho"
        )
        got = unit(x)
    torch.testing.assert_close(got, expected)


def test_fourier_unit_runs_the_fft_in_float32() -> None:
    # CPU torch.fft has no bfloat16 kernels: this only works if the unit casts around the FFT.
    torch.manual_seed(0)
    unit = FourierUnit(4, 4).eval()
    x = torch.randn(1, 4, 12, 12)
    with torch.inference_mode():
        reference = unit(x)
        low = unit.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), reference, atol=0.1, rtol=0.1)


def test_lfu_tiles_quarter_channels_in_reference_order() -> None:
    torch.manual_seed(0)
    transform = SpectralTransform(8, 8, enable_lfu=True).eval()
    x = torch.randn(1, 4, 6, 6)
    q, h = x[:, :1], 3
    expected_tiles = torch.cat(
        [q[..., :h, :h], q[..., h:, :h], q[..., :h, h:], q[..., h:, h:]], dim=1
    )
    seen: list[torch.Tensor] = []
    transform.lfu.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    with torch.inference_mode():
        transform._local_fourier(x)
    torch.testing.assert_close(seen[0], expected_tiles)


def test_lfu_generator_runs_on_non_square_input() -> None:
    kwargs = {"ratio_gin": 0.75, "ratio_gout": 0.75, "enable_lfu": True}
    model = tiny_generator(resnet_conv_kwargs=kwargs)
    assert any(".lfu." in key for key in model.state_dict())
    with torch.inference_mode():
        assert model(torch.rand(1, 4, 32, 48)).shape == (1, 3, 32, 48)

"""LaMa's generator: a ResNet of Fast Fourier Convolutions (FFC), written for this project.

The modules follow the LaMa paper ("Resolution-robust Large Mask Inpainting with Fourier
Convolutions", Suvorov et al., WACV 2022) and keep the attribute names of the reference
implementation, so that the official big-lama weights (`generator.*` in `best.ckpt`) load with
`load_state_dict(strict=True)`. Features that big-lama does not use (gating, squeeze-excitation,
spectral position encoding, spatial transforms, 3-D FFT) are rejected with a ValueError unless
they are given at their "off" value.

An FFC splits its channels into a local part (ordinary convolutions) and a global part (a
spectral transform whose 1x1 convolution acts on the 2-D real FFT of the feature map, so every
output pixel sees the whole image). Features travel between FFC layers as a (local, global)
pair; an absent branch is `None`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

FeaturePair = tuple[Tensor | None, Tensor | None]
NormFactory = Callable[[int], nn.Module]
ActivationFactory = Callable[[], nn.Module]

_relu: ActivationFactory = partial(nn.ReLU, inplace=True)

# Options of the reference FFC / FourierUnit this implementation does not provide, with the value
# that means "feature off" (accepted so that configs spelling out defaults still load).
_UNSUPPORTED_CONV_OPTIONS: dict[str, Any] = {
    "gated": False,
    "use_se": False,
    "se_kwargs": None,
    "spectral_pos_encoding": False,
    "spatial_scale_factor": None,
    "ffc3d": False,
    "use_jit": False,
}
_CONV_OPTIONS = ("ratio_gin", "ratio_gout", "enable_lfu", "fft_norm", "spatial_scale_mode")


class FourierUnit(nn.Module):
    """1x1 conv + BN + ReLU applied to the real 2-D FFT of the input (real/imag as channels)."""

    def __init__(self, in_channels: int, out_channels: int, fft_norm: str = "ortho") -> None:
        super().__init__()
        self.conv_layer = nn.Conv2d(in_channels * 2, out_channels * 2, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels * 2)
        self.relu = nn.ReLU(inplace=True)
        self.fft_norm = fft_norm

    def forward(self, x: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        # cuFFT in half precision only takes power-of-two sizes, and float32 is what the
        # weights were trained with: the transforms always run in float32.
        spectrum = torch.fft.rfft2(x.float(), norm=self.fft_norm)
        freq_w = spectrum.shape[-1]
        # (B, C, H, Wf, 2) -> (B, 2C, H, Wf) with channels ordered c0.re, c0.im, c1.re, ...:
        # the order the trained conv_layer weights expect.
        stacked = torch.view_as_real(spectrum).permute(0, 1, 4, 2, 3)
        stacked = stacked.reshape(batch, -1, height, freq_w).to(x.dtype)
        stacked = self.relu(self.bn(self.conv_layer(stacked)))
        pairs = stacked.float().reshape(batch, -1, 2, height, freq_w).permute(0, 1, 3, 4, 2)
        spectrum = torch.complex(pairs[..., 0], pairs[..., 1])
        out = torch.fft.irfft2(spectrum, s=(height, width), norm=self.fft_norm)
        return out.to(x.dtype)


class SpectralTransform(nn.Module):
    """The global-to-global path of an FFC: reduce, Fourier unit (+ optional LFU), expand."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        enable_lfu: bool = True,
        fft_norm: str = "ortho",
    ) -> None:
        super().__init__()
        hidden = out_channels // 2
        self.enable_lfu = enable_lfu
        self.downsample: nn.Module = (
            nn.AvgPool2d(kernel_size=(2, 2), stride=2) if stride == 2 else nn.Identity()
        )
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
        )
        self.fu = FourierUnit(hidden, hidden, fft_norm=fft_norm)
        if enable_lfu:
            self.lfu = FourierUnit(hidden, hidden)
        self.conv2 = nn.Conv2d(hidden, out_channels, kernel_size=1, bias=False)

    def _local_fourier(self, x: Tensor) -> Tensor:
        """LFU: the first quarter of the channels, cut into 2x2 spatial tiles stacked as
        channels (order: top-left, bottom-left, top-right, bottom-right), transformed, tiled."""
        _, channels, height, width = x.shape
        if height % 2 or width % 2:
            raise ValueError(f"LFU needs even feature sizes, got {height}x{width}")
        quarter = x[:, : channels // 4]
        rows = torch.cat(torch.split(quarter, height // 2, dim=-2), dim=1)
        tiles = torch.cat(torch.split(rows, width // 2, dim=-1), dim=1)
        return self.lfu(tiles).repeat(1, 1, 2, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(self.downsample(x))
        total = x + self.fu(x)
        if self.enable_lfu:
            total = total + self._local_fourier(x)
        return self.conv2(total)


def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


class FFC(nn.Module):
    """Fast Fourier Convolution: four paths l2l, l2g, g2l (spatial convs) and g2g (spectral).

    A path is `None` when its input or output branch has no channels.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        ratio_gin: float,
        ratio_gout: float,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        bias: bool = False,
        enable_lfu: bool = True,
        padding_type: str = "reflect",
        fft_norm: str = "ortho",
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"FFC stride must be 1 or 2, got {stride}")
        in_cg = int(in_channels * ratio_gin)
        in_cl = in_channels - in_cg
        out_cg = int(out_channels * ratio_gout)
        out_cl = out_channels - out_cg
        self.ratio_gin = ratio_gin
        self.ratio_gout = ratio_gout
        self.global_in_num = in_cg

        def conv(cin: int, cout: int) -> nn.Conv2d | None:
            if cin == 0 or cout == 0:
                return None
            return nn.Conv2d(
                cin,
                cout,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                bias=bias,
                padding_mode=padding_type,
            )

        # Creation order matches the reference, so a seeded default init gives the same weights.
        self.convl2l = conv(in_cl, out_cl)
        self.convl2g = conv(in_cl, out_cg)
        self.convg2l = conv(in_cg, out_cl)
        self.convg2g = (
            SpectralTransform(in_cg, out_cg, stride, enable_lfu, fft_norm=fft_norm)
            if in_cg > 0 and out_cg > 0
            else None
        )

    def forward(self, x: Tensor | FeaturePair) -> FeaturePair:
        x_l, x_g = x if isinstance(x, tuple) else (x, None)
        out_l: Tensor | None = None
        out_g: Tensor | None = None
        if self.ratio_gout != 1:
            out_l = _add(_apply(self.convl2l, x_l), _apply(self.convg2l, x_g))
        if self.ratio_gout != 0:
            out_g = _add(_apply(self.convl2g, x_l), _apply(self.convg2g, x_g))
        return out_l, out_g


def _apply(module: nn.Module | None, x: Tensor | None) -> Tensor | None:
    if module is None or x is None:
        return None
    return module(x)


class FFC_BN_ACT(nn.Module):  # the reference implementation's name
    """FFC followed by a norm and an activation on each branch that has channels."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        ratio_gin: float,
        ratio_gout: float,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        bias: bool = False,
        norm_layer: NormFactory = nn.BatchNorm2d,
        activation_layer: ActivationFactory = nn.Identity,
        padding_type: str = "reflect",
        enable_lfu: bool = True,
        fft_norm: str = "ortho",
    ) -> None:
        super().__init__()
        self.ffc = FFC(
            in_channels,
            out_channels,
            kernel_size,
            ratio_gin,
            ratio_gout,
            stride=stride,
            padding=padding,
            dilation=dilation,
            bias=bias,
            enable_lfu=enable_lfu,
            padding_type=padding_type,
            fft_norm=fft_norm,
        )
        global_channels = int(out_channels * ratio_gout)
        has_local = ratio_gout != 1
        has_global = ratio_gout != 0
        self.bn_l = norm_layer(out_channels - global_channels) if has_local else nn.Identity()
        self.bn_g = norm_layer(global_channels) if has_global else nn.Identity()
        self.act_l = activation_layer() if has_local else nn.Identity()
        self.act_g = activation_layer() if has_global else nn.Identity()

    def forward(self, x: Tensor | FeaturePair) -> FeaturePair:
        x_l, x_g = self.ffc(x)
        if x_l is not None:
            x_l = self.act_l(self.bn_l(x_l))
        if x_g is not None:
            x_g = self.act_g(self.bn_g(x_g))
        return x_l, x_g


class FFCResnetBlock(nn.Module):
    """Two FFC_BN_ACT layers with a residual connection on both branches.

    `inline=True` takes and returns one tensor (local channels first, then global)."""

    def __init__(
        self,
        dim: int,
        padding_type: str = "reflect",
        norm_layer: NormFactory = nn.BatchNorm2d,
        activation_layer: ActivationFactory = _relu,
        dilation: int = 1,
        inline: bool = False,
        **conv_kwargs: Any,
    ) -> None:
        super().__init__()

        def layer() -> FFC_BN_ACT:
            return FFC_BN_ACT(
                dim,
                dim,
                kernel_size=3,
                padding=dilation,
                dilation=dilation,
                norm_layer=norm_layer,
                activation_layer=activation_layer,
                padding_type=padding_type,
                **conv_kwargs,
            )

        self.conv1 = layer()
        self.conv2 = layer()
        self.inline = inline

    def forward(self, x: Tensor | FeaturePair) -> Tensor | FeaturePair:
        if self.inline:
            if not isinstance(x, Tensor):
                raise TypeError("an inline FFCResnetBlock takes one concatenated tensor")
            n_global = self.conv1.ffc.global_in_num
            split = x.shape[1] - n_global
            x_l: Tensor | None = x[:, :split]
            x_g: Tensor | None = x[:, split:] if n_global > 0 else None
        else:
            x_l, x_g = x if isinstance(x, tuple) else (x, None)
        y_l, y_g = self.conv2(self.conv1((x_l, x_g)))
        out = _add(x_l, y_l), _add(x_g, y_g)
        if self.inline:
            return torch.cat([t for t in out if t is not None], dim=1)
        return out


class ConcatTupleLayer(nn.Module):
    """Joins a (local, global) pair into one tensor along channels."""

    def forward(self, x: FeaturePair) -> Tensor:
        parts = [t for t in x if t is not None]
        if not parts:
            raise ValueError("ConcatTupleLayer got two empty branches")
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def _output_activation(kind: bool | str | None) -> nn.Module | None:
    if kind is True or kind == "tanh":
        return nn.Tanh()
    if kind == "sigmoid":
        return nn.Sigmoid()
    if kind is False or kind is None:
        return None
    raise ValueError(f"unknown add_out_act {kind!r} (expected 'sigmoid', 'tanh', true or false)")


class FFCResNetGenerator(nn.Module):
    """Init FFC (7x7) -> strided FFC downsampling -> FFC ResNet blocks -> transposed-conv
    upsampling -> 7x7 conv -> output activation. Input (B, input_nc, H, W) with H and W
    multiples of 2**n_downsampling; output (B, output_nc, H, W)."""

    def __init__(
        self,
        input_nc: int,
        output_nc: int,
        ngf: int = 64,
        n_downsampling: int = 3,
        n_blocks: int = 9,
        norm_layer: NormFactory = nn.BatchNorm2d,
        padding_type: str = "reflect",
        activation_layer: ActivationFactory = _relu,
        up_norm_layer: NormFactory = nn.BatchNorm2d,
        up_activation: ActivationFactory = _relu,
        init_conv_kwargs: Mapping[str, Any] | None = None,
        downsample_conv_kwargs: Mapping[str, Any] | None = None,
        resnet_conv_kwargs: Mapping[str, Any] | None = None,
        add_out_act: bool | str = True,
        max_features: int = 1024,
        out_ffc: bool = False,
        out_ffc_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if n_blocks < 0 or n_downsampling < 1:
            raise ValueError(
                f"need n_blocks >= 0 and n_downsampling >= 1, got {n_blocks}, {n_downsampling}"
            )
        init_kw = dict(init_conv_kwargs or {})
        down_kw = dict(downsample_conv_kwargs or {})
        res_kw = dict(resnet_conv_kwargs or {})
        self.input_nc = input_nc
        self.output_nc = output_nc
        self.ngf = ngf
        self.n_downsampling = n_downsampling
        self.n_blocks = n_blocks

        def width(n: float) -> int:
            return min(max_features, int(n))

        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            FFC_BN_ACT(
                input_nc,
                ngf,
                kernel_size=7,
                padding=0,
                norm_layer=norm_layer,
                activation_layer=activation_layer,
                **_ffc_defaults(init_kw),
            ),
        ]
        for i in range(n_downsampling):
            kwargs = dict(down_kw)
            if i == n_downsampling - 1:
                # The last downsampling layer already splits into the blocks' global branch.
                kwargs["ratio_gout"] = res_kw.get("ratio_gin", 0)
            layers.append(
                FFC_BN_ACT(
                    width(ngf * 2**i),
                    width(ngf * 2 ** (i + 1)),
                    kernel_size=3,
                    stride=2,
                    padding=1,
                    norm_layer=norm_layer,
                    activation_layer=activation_layer,
                    **_ffc_defaults(kwargs),
                )
            )
        bottleneck = width(ngf * 2**n_downsampling)
        for _ in range(n_blocks):
            layers.append(
                FFCResnetBlock(
                    bottleneck,
                    padding_type=padding_type,
                    norm_layer=norm_layer,
                    activation_layer=activation_layer,
                    **_ffc_defaults(res_kw),
                )
            )
        layers.append(ConcatTupleLayer())
        for i in range(n_downsampling):
            mult = 2 ** (n_downsampling - i)
            layers += [
                nn.ConvTranspose2d(
                    width(ngf * mult),
                    width(ngf * mult / 2),
                    kernel_size=3,
                    stride=2,
                    padding=1,
                    output_padding=1,
                ),
                up_norm_layer(width(ngf * mult / 2)),
                up_activation(),
            ]
        if out_ffc:
            layers.append(
                FFCResnetBlock(
                    ngf,
                    padding_type=padding_type,
                    norm_layer=norm_layer,
                    activation_layer=activation_layer,
                    inline=True,
                    **_ffc_defaults(dict(out_ffc_kwargs or {})),
                )
            )
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0)]
        out_act = _output_activation(add_out_act)
        if out_act is not None:
            layers.append(out_act)
        self.model = nn.Sequential(*layers)

    @property
    def min_input_side(self) -> int:
        """Smallest input side that works: the bottleneck's reflect padding needs >= 2 pixels."""
        return 2 ** (self.n_downsampling + 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def _ffc_defaults(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Validate FFC keyword options from a config and fill LaMa's defaults."""
    for key in list(kwargs):
        if key in _UNSUPPORTED_CONV_OPTIONS:
            if kwargs[key] != _UNSUPPORTED_CONV_OPTIONS[key]:
                raise ValueError(f"FFC option {key}={kwargs[key]!r} is not supported")
            del kwargs[key]
        elif key == "spatial_scale_mode":  # only used together with spatial_scale_factor
            del kwargs[key]
        elif key not in _CONV_OPTIONS:
            raise ValueError(f"unknown FFC option {key!r}")
    kwargs.setdefault("ratio_gin", 0)
    kwargs.setdefault("ratio_gout", 0)
    kwargs.setdefault("enable_lfu", True)
    return kwargs


_GENERATOR_OPTIONS = {
    "input_nc",
    "output_nc",
    "ngf",
    "n_downsampling",
    "n_blocks",
    "add_out_act",
    "init_conv_kwargs",
    "downsample_conv_kwargs",
    "resnet_conv_kwargs",
    "max_features",
    "out_ffc",
    "out_ffc_kwargs",
    "padding_type",
}


def build_generator(generator_config: Mapping[str, Any] | DictConfig) -> FFCResNetGenerator:
    """Build the generator from the `generator` section of a LaMa training config.yaml.

    Norm, activation and the other constructor arguments LaMa's configs cannot express keep
    LaMa's defaults (BatchNorm2d, ReLU, reflect padding, max_features 1024, no out FFC).
    """
    if isinstance(generator_config, DictConfig):
        container = OmegaConf.to_container(generator_config, resolve=True)
        if not isinstance(container, dict):
            raise ValueError("the generator config must be a mapping")
        config: dict[str, Any] = {str(k): v for k, v in container.items()}
    elif isinstance(generator_config, Mapping):
        config = dict(generator_config)
    else:
        raise ValueError(f"the generator config must be a mapping, got {type(generator_config)}")
    kind = config.pop("kind", None)
    if kind != "ffc_resnet":
        raise ValueError(f"unsupported LaMa generator kind {kind!r}; only 'ffc_resnet' is built")
    if config.pop("spatial_transform_layers", None) is not None:
        raise ValueError("spatial_transform_layers is not supported")
    config.pop("spatial_transform_kwargs", None)
    unknown = sorted(set(config) - _GENERATOR_OPTIONS)
    if unknown:
        raise ValueError(f"unknown ffc_resnet generator options: {unknown}")
    for key in ("input_nc", "output_nc"):
        if key not in config:
            raise ValueError(f"the generator config lacks {key!r}")
    for key in ("init_conv_kwargs", "downsample_conv_kwargs", "resnet_conv_kwargs"):
        if key in config and config[key] is not None and not isinstance(config[key], Mapping):
            raise ValueError(f"generator option {key!r} must be a mapping")
    return FFCResNetGenerator(**config)

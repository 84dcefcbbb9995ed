"""MONAI's UNet and DenseNet as our cards configure them, in plain PyTorch, for inference.

Importing MONAI imports all of it (its ``__init__`` loads every submodule: data,
transforms, SciPy's signal package...): about a third of ``cxr analyze``'s start-up and
~100 MB of memory, for two network classes. These are the same layers, under the same
names (so MONAI's weights load as they are) and in the same order, so the outputs are
the same; ``tests/test_plain_nets.py`` checks it on the shipped models. A card asking for
anything else (another activation, norm, dropout, kernel size) gets MONAI's class
(:func:`cxr_core.models.networks.build_inference_network`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

UNET_KEYS = {"spatial_dims", "in_channels", "out_channels", "channels", "strides",
             "num_res_units"}
DENSENET_KEYS = {"spatial_dims", "in_channels", "out_channels", "init_features",
                 "growth_rate", "block_config"}


def plain_network(architecture: str, kwargs: dict[str, Any]) -> nn.Module | None:
    """The plain-PyTorch twin of ``monai.networks.nets.<architecture>(**kwargs)``, or None
    when the configuration is not one of those written here."""
    if kwargs.get("spatial_dims") != 2:
        return None
    if (architecture == "UNet" and set(kwargs) <= UNET_KEYS
            and int(kwargs.get("num_res_units", 0)) >= 1):
        return PlainUNet(**kwargs)
    if architecture == "DenseNet" and set(kwargs) <= DENSENET_KEYS:
        return PlainDenseNet(**kwargs)
    return None


class _ADN(nn.Sequential):
    """MONAI's ADN with ordering NDA: instance norm, dropout 0, PReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__(OrderedDict([
            ("N", nn.InstanceNorm2d(channels)), ("D", nn.Dropout(0.0)), ("A", nn.PReLU())]))


class _Convolution(nn.Sequential):
    """MONAI's Convolution: a (transposed) 3x3 convolution, then ADN unless conv only."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, *,
                 transposed: bool = False, conv_only: bool = False) -> None:
        conv: nn.Module = (
            nn.ConvTranspose2d(in_channels, out_channels, 3, stride, padding=1,
                               output_padding=stride - 1) if transposed
            else nn.Conv2d(in_channels, out_channels, 3, stride, padding=1))
        layers: list[tuple[str, nn.Module]] = [("conv", conv)]
        if not conv_only:
            layers.append(("adn", _ADN(out_channels)))
        super().__init__(OrderedDict(layers))


class _ResidualUnit(nn.Module):
    """MONAI's ResidualUnit: ``subunits`` convolutions plus a residual path (identity, or
    a convolution when the stride or the channels change)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, subunits: int, *,
                 last_conv_only: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential()
        channels, unit_stride = in_channels, stride
        for index in range(max(1, subunits)):
            conv_only = last_conv_only and index == max(1, subunits) - 1
            self.conv.add_module(f"unit{index}", _Convolution(channels, out_channels,
                                                              unit_stride, conv_only=conv_only))
            channels, unit_stride = out_channels, 1
        self.residual: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            kernel, padding = (3, 1) if stride != 1 else (1, 0)
            self.residual = nn.Conv2d(in_channels, out_channels, kernel, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res: torch.Tensor = self.residual(x)
        out: torch.Tensor = self.conv(x)
        return out + res


class _SkipConnection(nn.Module):
    """MONAI's SkipConnection (cat mode): the input beside what the submodule makes of it."""

    def __init__(self, submodule: nn.Module) -> None:
        super().__init__()
        self.submodule = submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.submodule(x)], dim=1)


class PlainUNet(nn.Module):
    """``monai.networks.nets.UNet`` with its defaults (3x3 kernels, PReLU, instance norm,
    no dropout) and ``num_res_units`` >= 1."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int,
                 channels: Sequence[int], strides: Sequence[int], num_res_units: int) -> None:
        super().__init__()
        self.units = num_res_units
        self.model = self._block(in_channels, out_channels, list(channels), list(strides),
                                 is_top=True)

    def _block(self, inc: int, outc: int, channels: list[int], strides: list[int],
               is_top: bool) -> nn.Module:
        c, s = channels[0], strides[0]
        subblock: nn.Module
        if len(channels) > 2:
            subblock = self._block(c, c, channels[1:], strides[1:], is_top=False)
            upc = c * 2
        else:
            subblock = _ResidualUnit(c, channels[1], 1, self.units)
            upc = c + channels[1]
        down = _ResidualUnit(inc, c, s, self.units)
        up = nn.Sequential(_Convolution(upc, outc, s, transposed=True),
                           _ResidualUnit(outc, outc, 1, 1, last_conv_only=is_top))
        return nn.Sequential(down, _SkipConnection(subblock), up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(x)
        return out


class _DenseLayer(nn.Module):
    def __init__(self, in_channels: int, growth_rate: int, bn_size: int) -> None:
        super().__init__()
        out_channels = bn_size * growth_rate
        self.layers = nn.Sequential(OrderedDict([
            ("norm1", nn.BatchNorm2d(in_channels)), ("relu1", nn.ReLU(inplace=True)),
            ("conv1", nn.Conv2d(in_channels, out_channels, 1, bias=False)),
            ("norm2", nn.BatchNorm2d(out_channels)), ("relu2", nn.ReLU(inplace=True)),
            ("conv2", nn.Conv2d(out_channels, growth_rate, 3, padding=1, bias=False))]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.layers(x)], 1)


class PlainDenseNet(nn.Module):
    """``monai.networks.nets.DenseNet`` with its defaults (ReLU, batch norm, bottleneck 4,
    no dropout); ``class_layers.relu`` and ``class_layers.out`` as the class activation
    maps expect."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int,
                 init_features: int = 64, growth_rate: int = 32,
                 block_config: Sequence[int] = (6, 12, 24, 16), bn_size: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv0", nn.Conv2d(in_channels, init_features, 7, 2, 3, bias=False)),
            ("norm0", nn.BatchNorm2d(init_features)), ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(3, 2, 1))]))
        channels = init_features
        for index, layers in enumerate(block_config):
            block = nn.Sequential()
            for number in range(layers):
                block.add_module(f"denselayer{number + 1}",
                                 _DenseLayer(channels + number * growth_rate, growth_rate,
                                             bn_size))
            self.features.add_module(f"denseblock{index + 1}", block)
            channels += layers * growth_rate
            if index == len(block_config) - 1:
                self.features.add_module("norm5", nn.BatchNorm2d(channels))
            else:
                self.features.add_module(f"transition{index + 1}", nn.Sequential(OrderedDict([
                    ("norm", nn.BatchNorm2d(channels)), ("relu", nn.ReLU(inplace=True)),
                    ("conv", nn.Conv2d(channels, channels // 2, 1, bias=False)),
                    ("pool", nn.AvgPool2d(2, 2))])))
                channels //= 2
        self.class_layers = nn.Sequential(OrderedDict([
            ("relu", nn.ReLU(inplace=True)), ("pool", nn.AdaptiveAvgPool2d(1)),
            ("flatten", nn.Flatten(1)), ("out", nn.Linear(channels, out_channels))]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.class_layers(self.features(x))
        return out

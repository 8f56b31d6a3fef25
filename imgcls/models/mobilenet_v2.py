"""MobileNetV2 (Sandler et al. 2018) exactly as the 2019 Paddle programs build it.

Paddle details kept: widths are ``int(c * scale)`` (truncation, no rounding to multiples of 8); every inverted
residual has its 1x1 expand conv, even the first block with expansion 1; ReLU6 after expand and depthwise convs;
the last 1x1 conv has 1280 channels unless scale > 1 (then ``int(1280 * scale)``); global average pool, FC.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import ConvBNAct, DWConvBNAct
from ._paddle_names import layer_names
from ._registry import ModelCfg, paddle_tar, register_alias, register_model


class InvertedResidual(nn.Module):
    """1x1 expand (ReLU6) -> 3x3 depthwise (ReLU6) -> 1x1 linear; plus the input when ``residual``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int, residual: bool) -> None:
        super().__init__()
        hidden = int(round(in_channels * expansion))
        self.residual = residual
        self.expand = ConvBNAct(in_channels, hidden, 1, act="relu6")
        self.dwise = DWConvBNAct(hidden, 3, stride, act="relu6")
        self.linear = ConvBNAct(hidden, out_channels, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(self.dwise(self.expand(x)))
        return x + out if self.residual else out


class MobileNetV2(nn.Module):
    """Stem conv, seven groups of inverted residuals (``SETTINGS``), 1x1 conv, global average pool, FC."""

    def __init__(self, scale: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        in_ch = int(32 * scale)
        self.stem = ConvBNAct(3, in_ch, 3, stride=2, act="relu6")
        groups = []
        for expansion, channels, repeats, stride in SETTINGS:
            out_ch = int(channels * scale)
            # Paddle's first block of a group never adds the shortcut, even where shapes would allow it.
            blocks = [InvertedResidual(in_ch, out_ch, stride, expansion, residual=False)]
            blocks += [InvertedResidual(out_ch, out_ch, 1, expansion, residual=True) for _ in range(1, repeats)]
            groups.append(nn.Sequential(*blocks))
            in_ch = out_ch
        self.blocks = nn.Sequential(*groups)
        last = int(1280 * scale) if scale > 1.0 else 1280
        self.head = ConvBNAct(in_ch, last, 1, act="relu6")
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(last, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.forward_features(x)), 1))


# (expansion t, channels c at scale 1, repeats n, stride of the first block s), Paddle's bottleneck_params_list.
SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def paddle_names(model: MobileNetV2) -> dict[str, str]:
    """Our state-dict keys -> the tensor names of Paddle's MobileNetV2 programs (``conv<g+2>_<b+1>_expand`` ...)."""
    names = layer_names("stem", "conv1_1") | layer_names("head", "conv9")
    for g, group in enumerate(model.blocks):
        for b in range(len(group)):
            for part in ("expand", "dwise", "linear"):
                names |= layer_names(f"blocks.{g}.{b}.{part}", f"conv{g + 2}_{b + 1}_{part}")
    return names | {"fc.weight": "fc10_weights", "fc.bias": "fc10_offset"}


# mobilenet_v2.py names no initializer (unlike V1, no MSRA): convs take fluid's default, the FC fluid's Xavier.
def _cfg(name: str, top1: float, top5: float) -> ModelCfg:
    return ModelCfg(name, "mobilenet_v2", top1=top1, top5=top5, weights=paddle_tar(name), paddle_names=paddle_names)


@register_model(_cfg("MobileNetV2", 72.15, 90.65))
def mobilenet_v2_x1_0(num_classes: int = 1000) -> MobileNetV2:
    """MobileNetV2 1.0x (Paddle's ``MobileNetV2_x1_0``; released as ``MobileNetV2_pretrained.tar``)."""
    return MobileNetV2(1.0, num_classes)


@register_model(_cfg("MobileNetV2_x0_25", 53.21, 76.52))
def mobilenet_v2_x0_25(num_classes: int = 1000) -> MobileNetV2:
    """MobileNetV2 0.25x."""
    return MobileNetV2(0.25, num_classes)


@register_model(_cfg("MobileNetV2_x0_5", 65.03, 85.72))
def mobilenet_v2_x0_5(num_classes: int = 1000) -> MobileNetV2:
    """MobileNetV2 0.5x."""
    return MobileNetV2(0.5, num_classes)


@register_model(_cfg("MobileNetV2_x1_5", 74.12, 91.67))
def mobilenet_v2_x1_5(num_classes: int = 1000) -> MobileNetV2:
    """MobileNetV2 1.5x."""
    return MobileNetV2(1.5, num_classes)


@register_model(_cfg("MobileNetV2_x2_0", 75.23, 92.58))
def mobilenet_v2_x2_0(num_classes: int = 1000) -> MobileNetV2:
    """MobileNetV2 2.0x."""
    return MobileNetV2(2.0, num_classes)


register_alias("MobileNetV2_x1_0", "MobileNetV2")

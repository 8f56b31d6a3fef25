"""MobileNetV1 (Howard et al. 2017) exactly as the 2019 Paddle program builds it.

A 3x3 stem conv, then 13 depthwise-separable blocks (3x3 depthwise conv + BN + ReLU, 1x1 conv + BN + ReLU),
global average pool, FC. Widths are ``int(c * scale)``; Paddle releases only scale 1.0.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import ConvBNAct, DWConvBNAct
from ._paddle_names import layer_names
from ._registry import ModelCfg, paddle_tar, register_model
from .paddle_init import msra


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv + BN + ReLU (Paddle's ``<name>_dw``), then 1x1 conv + BN + ReLU (``<name>_sep``)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.dw = DWConvBNAct(in_channels, 3, stride, act="relu")
        self.sep = ConvBNAct(in_channels, out_channels, 1, act="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sep(self.dw(x))


# (Paddle block name, output channels at scale 1, stride of the depthwise conv).
BLOCKS = (
    ("conv2_1", 64, 1),
    ("conv2_2", 128, 2),
    ("conv3_1", 128, 1),
    ("conv3_2", 256, 2),
    ("conv4_1", 256, 1),
    ("conv4_2", 512, 2),
    *((f"conv5_{i}", 512, 1) for i in range(1, 6)),
    ("conv5_6", 1024, 2),
    ("conv6", 1024, 1),
)


class MobileNetV1(nn.Module):
    """Stem conv, the depthwise-separable blocks of ``BLOCKS``, global average pool, FC."""

    def __init__(self, scale: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        in_ch = int(32 * scale)
        self.stem = ConvBNAct(3, in_ch, 3, stride=2, act="relu")
        blocks = []
        for _, channels, stride in BLOCKS:
            blocks.append(DepthwiseSeparable(in_ch, int(channels * scale), stride))
            in_ch = int(channels * scale)
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.forward_features(x)), 1))


def paddle_names(model: MobileNetV1) -> dict[str, str]:
    """Our state-dict keys -> the tensor names of Paddle's MobileNetV1 program."""
    names = layer_names("stem", "conv1")
    for i, (paddle, _, _) in enumerate(BLOCKS[: len(model.blocks)]):
        names |= layer_names(f"blocks.{i}.dw", f"{paddle}_dw") | layer_names(f"blocks.{i}.sep", f"{paddle}_sep")
    return names | {"fc.weight": "fc7_weights", "fc.bias": "fc7_offset"}


# mobilenet_v1.py: every conv and the FC use MSRA() (uniform, per-group fan_in).
PADDLE_INIT = (("*", msra()),)


@register_model(
    ModelCfg(
        "MobileNetV1",
        "mobilenet_v1",
        top1=70.99,
        top5=89.68,
        weights=paddle_tar("MobileNetV1"),
        paddle_names=paddle_names,
        init_rules=PADDLE_INIT,
    )
)
def mobilenet_v1(num_classes: int = 1000) -> MobileNetV1:
    """MobileNetV1 1.0x."""
    return MobileNetV1(1.0, num_classes)

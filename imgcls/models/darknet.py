"""DarkNet53 (Redmon & Farhadi 2018, YOLOv3's backbone) as the 2019 Paddle classification program builds it.

Paddle details kept: every conv is conv + BN + ReLU (the Paddle program uses ReLU, not YOLO's leaky ReLU); a 3x3/1
stem to 32 channels and a 3x3/2 downsample conv to 64; five stages of 1, 2, 8, 8, 4 residual blocks (1x1 conv to
half, 3x3 conv back, plain add with no activation after it), each stage but the last followed by a 3x3/2 downsample
conv doubling the channels; global average pool, FC. Native input 256.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import ConvBNAct
from ._paddle_names import conv_bn_names, linear_names
from ._registry import ModelCfg, register_model
from .paddle_init import uniform_fan_in

STAGE_BLOCKS = (1, 2, 8, 8, 4)
ACT = "relu"
DARKNET_BN = (".bn.scale", ".bn.offset", ".bn.mean", ".bn.var")


class DarkBlock(nn.Module):
    """``x + conv3x3(conv1x1(x))``, the 1x1 halving the channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(channels, channels // 2, 1, act=ACT)
        self.conv2 = ConvBNAct(channels // 2, channels, 3, act=ACT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x))


class DarkNet53(nn.Module):
    """Stem conv + downsample, residual stages with downsample convs between them, global average pool, FC."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, 32, 3, act=ACT)
        self.stem_down = ConvBNAct(32, 64, 3, 2, act=ACT)
        stages, downs, channels = [], [], 64
        for s, n_blocks in enumerate(STAGE_BLOCKS):
            stages.append(nn.Sequential(*[DarkBlock(channels) for _ in range(n_blocks)]))
            if s < len(STAGE_BLOCKS) - 1:
                downs.append(ConvBNAct(channels, channels * 2, 3, 2, act=ACT))
                channels *= 2
        self.stages = nn.ModuleList(stages)
        self.downs = nn.ModuleList(downs)  # downs[s] follows stages[s]
        self.head_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_down(self.stem(x))
        for s, stage in enumerate(self.stages):
            x = stage(x)
            if s < len(self.downs):
                x = self.downs[s](x)
        return self.fc(torch.flatten(self.head_pool(x), 1))


def _names(key: str, paddle_prefix: str) -> dict[str, str]:
    return conv_bn_names(key, paddle_prefix + ".conv.weights", paddle_prefix, DARKNET_BN)


def paddle_names(model: DarkNet53) -> dict[str, str]:
    """Paddle's DarkNet names: ``yolo_input.conv.weights``, ``stage.<s>.<block>.<0|1>.bn.scale``,
    ``stage.<s>.downsample.conv.weights``, ..., ``fc_weights``."""
    names = _names("stem", "yolo_input") | _names("stem_down", "yolo_input.downsample")
    for s, stage in enumerate(model.stages):
        for b in range(len(stage)):
            names |= _names(f"stages.{s}.{b}.conv1", f"stage.{s}.{b}.0")
            names |= _names(f"stages.{s}.{b}.conv2", f"stage.{s}.{b}.1")
    for s in range(len(model.downs)):
        names |= _names(f"downs.{s}", f"stage.{s}.downsample")
    return names | linear_names("fc", "fc_weights", "fc_offset")


# darknet.py: convs take fluid's default; the FC ~ Uniform(-stdv, stdv), stdv = 1 / sqrt(C).
PADDLE_INIT = (("fc", uniform_fan_in()),)


@register_model(
    ModelCfg(
        "DarkNet53",
        "darknet",
        input_size=256,
        resize_short=256,
        top1=78.04,
        top5=94.05,
        weights="DarkNet53_ImageNet1k_pretrained.tar",
        paddle_names=paddle_names,
        init_rules=PADDLE_INIT,
    )
)
def darknet53(num_classes: int = 1000) -> DarkNet53:
    """DarkNet53 (released as ``DarkNet53_ImageNet1k_pretrained.tar``)."""
    return DarkNet53(num_classes)

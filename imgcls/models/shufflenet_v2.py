"""ShuffleNetV2 (Ma et al. 2018) exactly as the 2019 Paddle programs build it.

Paddle details kept: the depthwise conv of every branch is followed by BN alone (no activation); a stride-1 unit
splits the input in halves, keeps the first and transforms the second, a stride-2 unit concatenates
[downsample branch, main branch]; both end in a 2-group channel shuffle. The swish variant uses swish wherever
the plain one uses ReLU. Paddle's final 7x7 average pool is a global pool here, so other input sizes work too.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import ChannelShuffle, ConvBNAct, DWConvBNAct
from ._paddle_names import layer_names
from ._registry import ModelCfg, paddle_tar, register_alias, register_model
from .paddle_init import msra


class ShuffleUnit(nn.Module):
    """One ShuffleNetV2 unit. Stride 1: ``shuffle(x1, main(x2))``; stride 2: ``shuffle(down(x), main(x))``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, act: str) -> None:
        super().__init__()
        branch = out_channels // 2
        self.stride = stride
        main_in = in_channels // 2 if stride == 1 else in_channels
        if stride == 2:  # Paddle's conv4 (depthwise, no act) and conv5
            self.down_dw = DWConvBNAct(in_channels, 3, stride, act=None)
            self.down_pw = ConvBNAct(in_channels, branch, 1, act=act)
        # Paddle's conv1, conv2 (depthwise, no act), conv3
        self.main_pw = ConvBNAct(main_in, branch, 1, act=act)
        self.main_dw = DWConvBNAct(branch, 3, stride, act=None)
        self.main_linear = ConvBNAct(branch, branch, 1, act=act)
        self.shuffle = ChannelShuffle(2)

    def main(self, x: torch.Tensor) -> torch.Tensor:
        return self.main_linear(self.main_dw(self.main_pw(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            kept, transformed = x.chunk(2, dim=1)
            return self.shuffle(kept, self.main(transformed))
        return self.shuffle(self.down_pw(self.down_dw(x)), self.main(x))


class ShuffleNetV2(nn.Module):
    """Stem conv + max pool, three stages of shuffle units (4, 8, 4), 1x1 conv, global average pool, FC."""

    def __init__(self, channels: tuple[int, ...], num_classes: int = 1000, act: str = "relu") -> None:
        super().__init__()
        stem, *stage_channels, last = channels
        self.stem = ConvBNAct(3, stem, 3, stride=2, act=act)
        self.stem_pool = nn.MaxPool2d(3, stride=2, padding=1)
        stages, in_ch = [], stem
        for repeats, out_ch in zip(STAGE_REPEATS, stage_channels):
            units = [ShuffleUnit(in_ch if i == 0 else out_ch, out_ch, 2 if i == 0 else 1, act) for i in range(repeats)]
            stages.append(nn.Sequential(*units))
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        self.head = ConvBNAct(in_ch, last, 1, act=act)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(last, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem_pool(self.stem(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.forward_features(x)), 1))


STAGE_REPEATS = (4, 8, 4)
# scale -> (stem, stage2, stage3, stage4, last conv) output channels, Paddle's stage_out_channels[1:].
CHANNELS = {
    "x0_25": (24, 24, 48, 96, 512),
    "x0_33": (24, 32, 64, 128, 512),
    "x0_5": (24, 48, 96, 192, 1024),
    "x1_0": (24, 116, 232, 464, 1024),
    "x1_5": (24, 176, 352, 704, 1024),
    "x2_0": (24, 224, 488, 976, 2048),
}


def paddle_names(model: ShuffleNetV2) -> dict[str, str]:
    """Our state-dict keys -> the tensor names of Paddle's ShuffleNetV2 programs."""
    names = layer_names("stem", "stage1_conv") | layer_names("head", "conv5")
    parts = {"down_dw": "conv4", "down_pw": "conv5", "main_pw": "conv1", "main_dw": "conv2", "main_linear": "conv3"}
    for s, stage in enumerate(model.stages):
        for u, unit in enumerate(stage):
            for attr, suffix in parts.items():
                if hasattr(unit, attr):
                    names |= layer_names(f"stages.{s}.{u}.{attr}", f"stage_{s + 2}_{u + 1}_{suffix}")
    return names | {"fc.weight": "fc6_weights", "fc.bias": "fc6_offset"}


# shufflenet_v2.py / shufflenet_v2_swish.py: every conv and the FC use MSRA() (uniform, per-group fan_in).
PADDLE_INIT = (("*", msra()),)


def _cfg(name: str, top1: float, top5: float) -> ModelCfg:
    return ModelCfg(
        name,
        "shufflenet_v2",
        top1=top1,
        top5=top5,
        weights=paddle_tar(name),
        paddle_names=paddle_names,
        init_rules=PADDLE_INIT,
    )


@register_model(_cfg("ShuffleNetV2", 68.80, 88.45))
def shufflenet_v2_x1_0(num_classes: int = 1000, **kw) -> ShuffleNetV2:
    """ShuffleNetV2 1.0x (Paddle's ``ShuffleNetV2_x1_0``; released as ``ShuffleNetV2_pretrained.tar``)."""
    return ShuffleNetV2(CHANNELS["x1_0"], num_classes, **kw)


@register_model(_cfg("ShuffleNetV2_x0_25", 49.90, 73.79))
def shufflenet_v2_x0_25(num_classes: int = 1000, **kw) -> ShuffleNetV2:
    """ShuffleNetV2 0.25x."""
    return ShuffleNetV2(CHANNELS["x0_25"], num_classes, **kw)


@register_model(_cfg("ShuffleNetV2_x0_33", 53.73, 77.05))
def shufflenet_v2_x0_33(num_classes: int = 1000, **kw) -> ShuffleNetV2:
    """ShuffleNetV2 0.33x."""
    return ShuffleNetV2(CHANNELS["x0_33"], num_classes, **kw)


@register_model(_cfg("ShuffleNetV2_x0_5", 60.32, 82.26))
def shufflenet_v2_x0_5(num_classes: int = 1000, **kw) -> ShuffleNetV2:
    """ShuffleNetV2 0.5x."""
    return ShuffleNetV2(CHANNELS["x0_5"], num_classes, **kw)


@register_model(_cfg("ShuffleNetV2_x1_5", 71.63, 90.15))
def shufflenet_v2_x1_5(num_classes: int = 1000, **kw) -> ShuffleNetV2:
    """ShuffleNetV2 1.5x."""
    return ShuffleNetV2(CHANNELS["x1_5"], num_classes, **kw)


@register_model(_cfg("ShuffleNetV2_x2_0", 73.15, 91.20))
def shufflenet_v2_x2_0(num_classes: int = 1000, **kw) -> ShuffleNetV2:
    """ShuffleNetV2 2.0x."""
    return ShuffleNetV2(CHANNELS["x2_0"], num_classes, **kw)


@register_model(_cfg("ShuffleNetV2_swish", 70.03, 89.17))
def shufflenet_v2_swish(num_classes: int = 1000, **kw) -> ShuffleNetV2:
    """ShuffleNetV2 1.0x with swish in place of every ReLU (Paddle's ``ShuffleNetV2_x1_0_swish``)."""
    return ShuffleNetV2(CHANNELS["x1_0"], num_classes, act="swish", **kw)


register_alias("ShuffleNetV2_x1_0", "ShuffleNetV2")
register_alias("ShuffleNetV2_x1_0_swish", "ShuffleNetV2_swish")

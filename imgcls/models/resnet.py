"""ResNet (He et al. 2016) and its vc/vd variants (He et al. 2019, "Bag of Tricks") as the 2019 Paddle programs
build them; also the shared residual machinery that ResNeXt, SE-ResNeXt/SENet154_vd and the WSL ResNeXts import.

Paddle details kept: every conv is conv + BN (no bias) with padding (k-1)//2; the stride of a bottleneck sits on its
3x3 conv; stem max pool 3x3/2 padding 1 (floor); ResNet18/34 project the shortcut of their very first block although
its shape does not change; the vc/vd stem is three 3x3 convs (32, 32, 64); the vd shortcut of a downsampling block
(not in the first stage) is a 2x2/2 average pool (floor mode) then a stride-1 1x1 conv; global average pool + FC.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..layers import ConvBNAct, SqueezeExcite
from ._paddle_names import conv_bn_names, linear_names
from ._registry import ModelCfg, paddle_tar, register_model
from .paddle_init import uniform_fan_in


class Shortcut(nn.Module):
    """Projection shortcut: ``proj`` 1x1 conv + BN (strided), or with ``avg_down`` a 2x2/2 average pool first and a
    stride-1 conv (the vd trick: the pool sees every input pixel, the strided 1x1 conv drops three in four)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, avg_down: bool) -> None:
        super().__init__()
        avg_down = avg_down and stride > 1
        self.pool = nn.AvgPool2d(2, 2) if avg_down else nn.Identity()
        self.proj = ConvBNAct(in_channels, out_channels, 1, 1 if avg_down else stride, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pool(x))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BNs (stride on the first), ``relu(out + shortcut)``."""

    def __init__(self, in_channels: int, width: int, out_channels: int, stride: int, shortcut: nn.Module | None, **_):
        super().__init__()
        self.conv1 = ConvBNAct(in_channels, width, 3, stride)
        self.conv2 = ConvBNAct(width, out_channels, 3, act=None)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        short = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(self.conv2(self.conv1(x)) + short)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride, ``groups``) -> 1x1 conv-BNs; ``relu(out + shortcut)``, or with ``se_reduction`` the
    squeeze-excitation of ``out`` followed by that same add + ReLU (one ``SqueezeExcite`` op)."""

    def __init__(
        self,
        in_channels: int,
        width: int,
        out_channels: int,
        stride: int,
        shortcut: nn.Module | None,
        groups: int = 1,
        se_reduction: int | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(in_channels, width, 1)
        self.conv2 = ConvBNAct(width, width, 3, stride, groups=groups)
        self.conv3 = ConvBNAct(width, out_channels, 1, act=None)
        self.se = SqueezeExcite(out_channels, out_channels // se_reduction) if se_reduction else None
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        short = x if self.shortcut is None else self.shortcut(x)
        out = self.conv3(self.conv2(self.conv1(x)))
        if self.se is not None:
            return self.se(out, residual=short)
        return torch.relu(out + short)


@dataclass(frozen=True)
class ResNetSpec:
    """One residual network: the numbers a variant table holds."""

    depths: tuple[int, ...]  # blocks per stage
    widths: tuple[int, ...]  # inner (3x3 conv) channels per stage
    out_channels: tuple[int, ...]  # block output channels per stage
    bottleneck: bool = True
    groups: int = 1
    stem: tuple[int, ...] = (64,)  # one 7x7 conv, or the channels of a deep stem of 3x3 convs
    avg_down: bool = False  # vd shortcut (not in the first stage, whose first block does not downsample)
    project_first: bool = False  # ResNet18/34: the first block always projects its shortcut
    se_reduction: int | None = None
    dropout: float = 0.0


def make_stem(channels: tuple[int, ...]) -> nn.Sequential:
    """(64,) -> one 7x7/2 conv-BN-ReLU; (c1, c2, c3) -> 3x3 convs, the first with stride 2."""
    if len(channels) == 1:
        return nn.Sequential(ConvBNAct(3, channels[0], 7, 2))
    in_channels = (3,) + channels[:-1]
    return nn.Sequential(
        *[ConvBNAct(i, o, 3, 2 if j == 0 else 1) for j, (i, o) in enumerate(zip(in_channels, channels))]
    )


def make_stage(spec: ResNetSpec, stage: int, in_channels: int) -> nn.Sequential:
    """The blocks of one stage; the first block downsamples (except in stage 0) and may project its shortcut."""
    block_cls = Bottleneck if spec.bottleneck else BasicBlock
    width, out_channels = spec.widths[stage], spec.out_channels[stage]
    blocks = []
    for i in range(spec.depths[stage]):
        stride = 2 if i == 0 and stage > 0 else 1
        project = in_channels != out_channels or stride != 1 or (spec.project_first and stage == 0 and i == 0)
        shortcut = Shortcut(in_channels, out_channels, stride, spec.avg_down and stage > 0) if project else None
        blocks.append(
            block_cls(in_channels, width, out_channels, stride, shortcut, groups=spec.groups,
                      se_reduction=spec.se_reduction)
        )  # fmt: skip
        in_channels = out_channels
    return nn.Sequential(*blocks)


class ResNet(nn.Module):
    """Stem, 3x3/2 max pool, residual stages, global average pool, (dropout), FC."""

    def __init__(self, spec: ResNetSpec, num_classes: int = 1000) -> None:
        super().__init__()
        self.spec = spec
        self.stem = make_stem(spec.stem)
        self.pool = nn.MaxPool2d(3, 2, padding=1)
        stages, in_channels = [], spec.stem[-1]
        for s in range(len(spec.depths)):
            stages.append(make_stage(spec, s, in_channels))
            in_channels = spec.out_channels[s]
        self.stages = nn.Sequential(*stages)
        self.head_pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout else nn.Identity()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.pool(self.stem(x)))
        return self.fc(self.dropout(torch.flatten(self.head_pool(x), 1)))


def iter_blocks(model: ResNet) -> Iterator[tuple[str, int, int, int, nn.Module]]:
    """(state-dict prefix, stage index, block index, blocks in the stage, block) over every residual block."""
    for s, stage in enumerate(model.stages):
        for i, block in enumerate(stage):
            yield f"stages.{s}.{i}", s, i, len(stage), block


def res_block_name(stage: int, index: int, stage_len: int) -> str:
    """Paddle's ``res<stage+2><letter>`` names; the long third stage of 101+ layer nets counts a, b1, b2, ..."""
    if stage == 2 and stage_len > 6:
        return f"res{stage + 2}" + ("a" if index == 0 else f"b{index}")
    return f"res{stage + 2}{chr(97 + index)}"


def res_bn_name(conv_name: str) -> str:
    """Paddle's ResNet/ResNeXt BN naming: ``bn_conv1`` for ``conv1``, else ``"bn" + conv_name[3:]``
    (so ``res2a_branch2a`` -> ``bn2a_branch2a``, ``conv1_1`` -> ``bnv1_1``, ``res_conv1`` -> ``bn_conv1``)."""
    return "bn_conv1" if conv_name == "conv1" else "bn" + conv_name[3:]


def block_convs(block: nn.Module) -> list[str]:
    """State-dict prefixes of a block's conv-BNs, in Paddle's order: conv1, conv2, (conv3,) (shortcut.proj)."""
    attrs = ["conv1", "conv2"] + (["conv3"] if isinstance(block, Bottleneck) else [])
    return attrs + (["shortcut.proj"] if block.shortcut is not None else [])


RES_BRANCH = {"conv1": "_branch2a", "conv2": "_branch2b", "conv3": "_branch2c", "shortcut.proj": "_branch1"}


def res_paddle_names(model: ResNet, stem_names: tuple[str, ...], fc: tuple[str, str]) -> dict[str, str]:
    """The ResNet/ResNeXt programs' tensor names: ``res2a_branch2a_weights``, ``bn2a_branch2a_scale``, ..."""
    names = {}
    for j, conv_name in enumerate(stem_names):
        names |= conv_bn_names(f"stem.{j}", conv_name + "_weights", res_bn_name(conv_name))
    for key, s, i, n, block in iter_blocks(model):
        for attr in block_convs(block):
            conv_name = res_block_name(s, i, n) + RES_BRANCH[attr]
            names |= conv_bn_names(f"{key}.{attr}", conv_name + "_weights", res_bn_name(conv_name))
    return names | linear_names("fc", *fc)


DEEP_STEM = (32, 32, 64)
DEPTHS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 12, 48, 3),
}


def resnet_spec(layers: int, variant: str = "") -> ResNetSpec:
    """ResNet<layers> (variant "", "vc" = deep stem, "vd" = deep stem + avg-pool shortcut)."""
    bottleneck = layers >= 50
    widths = (64, 128, 256, 512)
    outs = tuple(w * 4 for w in widths) if bottleneck else widths
    return ResNetSpec(
        DEPTHS[layers],
        widths,
        outs,
        bottleneck=bottleneck,
        stem=DEEP_STEM if variant else (64,),
        avg_down=variant == "vd",
        project_first=not bottleneck,
    )


def resnet_paddle_names(model: ResNet) -> dict[str, str]:
    stem = ("conv1",) if len(model.spec.stem) == 1 else ("conv1_1", "conv1_2", "conv1_3")
    return res_paddle_names(model, stem, ("fc_0.w_0", "fc_0.b_0"))


# resnet.py / resnet_vc.py / resnet_vd.py: convs take fluid's default; the FC ~ Uniform(-stdv, stdv), stdv =
# 1 / sqrt(C).
PADDLE_INIT = (("fc", uniform_fan_in()),)


def _cfg(name: str, top1: float, top5: float) -> ModelCfg:
    return ModelCfg(
        name,
        "resnet",
        top1=top1,
        top5=top5,
        weights=paddle_tar(name),
        paddle_names=resnet_paddle_names,
        init_rules=PADDLE_INIT,
    )


@register_model(_cfg("ResNet18", 70.98, 89.92))
def resnet18(num_classes: int = 1000) -> ResNet:
    """ResNet18 (basic blocks)."""
    return ResNet(resnet_spec(18), num_classes)


@register_model(_cfg("ResNet34", 74.57, 92.14))
def resnet34(num_classes: int = 1000) -> ResNet:
    """ResNet34 (basic blocks)."""
    return ResNet(resnet_spec(34), num_classes)


@register_model(_cfg("ResNet50", 76.50, 93.00))
def resnet50(num_classes: int = 1000) -> ResNet:
    """ResNet50."""
    return ResNet(resnet_spec(50), num_classes)


@register_model(_cfg("ResNet50_vc", 78.35, 94.03))
def resnet50_vc(num_classes: int = 1000) -> ResNet:
    """ResNet50 with the deep 3x3 stem."""
    return ResNet(resnet_spec(50, "vc"), num_classes)


@register_model(_cfg("ResNet50_vd", 79.12, 94.44))
def resnet50_vd(num_classes: int = 1000) -> ResNet:
    """ResNet50 with the deep stem and the avg-pool shortcut."""
    return ResNet(resnet_spec(50, "vd"), num_classes)


@register_model(_cfg("ResNet50_vd_v2", 79.84, 94.93))
def resnet50_vd_v2(num_classes: int = 1000) -> ResNet:
    """ResNet50_vd's network (Paddle's v2 weights came from a longer training recipe, not a new architecture)."""
    return ResNet(resnet_spec(50, "vd"), num_classes)


@register_model(_cfg("ResNet101", 77.56, 93.64))
def resnet101(num_classes: int = 1000) -> ResNet:
    """ResNet101."""
    return ResNet(resnet_spec(101), num_classes)


@register_model(_cfg("ResNet101_vd", 80.17, 94.97))
def resnet101_vd(num_classes: int = 1000) -> ResNet:
    """ResNet101_vd."""
    return ResNet(resnet_spec(101, "vd"), num_classes)


@register_model(_cfg("ResNet152", 78.26, 93.96))
def resnet152(num_classes: int = 1000) -> ResNet:
    """ResNet152."""
    return ResNet(resnet_spec(152), num_classes)


@register_model(_cfg("ResNet152_vd", 80.59, 95.30))
def resnet152_vd(num_classes: int = 1000) -> ResNet:
    """ResNet152_vd."""
    return ResNet(resnet_spec(152, "vd"), num_classes)


@register_model(_cfg("ResNet200_vd", 80.93, 95.33))
def resnet200_vd(num_classes: int = 1000) -> ResNet:
    """ResNet200_vd (3, 12, 48, 3 bottlenecks)."""
    return ResNet(resnet_spec(200, "vd"), num_classes)

"""Xception (Chollet 2017) exactly as the 2019 Paddle program ``Xception_41`` builds it.

Paddle details kept: stem convs are 3x3 with padding 1 (BN + ReLU); a separable conv is **pointwise first**, then
the 3x3 depthwise, BN after each and no activation inside; blocks put ReLU *before* each separable conv (except
the very first of the entry flow); entry and exit blocks end in a 3x3/stride max pool (padding 1) and add a 1x1
strided conv shortcut without BN; middle-flow blocks (8 in Xception41) are three ReLU-separable convs plus the
identity; the exit flow ends with two separable convs each followed by ReLU, global average pool, fc.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import ConvBNAct, DWConvBNAct
from ._paddle_names import layer_names
from ._registry import ModelCfg, paddle_tar, register_alias, register_model
from .paddle_init import uniform_fan_in


def conv_bn_names(key: str, paddle: str) -> dict[str, str]:
    """Xception names a layer's BN ``bn_<paddle>_scale``, ... (the other families: ``<paddle>_bn_scale``)."""
    return layer_names(key, paddle, bn_prefix=f"bn_{paddle}")


class SeparableConv(nn.Module):
    """1x1 conv + BN, then 3x3 depthwise conv + BN (Paddle's order; no activation)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pw = ConvBNAct(in_channels, out_channels, 1, act=None)
        self.dw = DWConvBNAct(out_channels, 3, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dw(self.pw(x))


class XceptionBlock(nn.Module):
    """ReLU-separable convs, then either (pool_stride given) max pool + 1x1 conv shortcut or the identity."""

    def __init__(
        self, in_channels: int, widths: tuple[int, ...], pool_stride: int | None, relu_first: bool = True
    ) -> None:
        super().__init__()
        self.relu_first = relu_first
        ins = (in_channels, *widths[:-1])
        self.seps = nn.ModuleList(SeparableConv(i, o) for i, o in zip(ins, widths))
        self.pool = nn.MaxPool2d(3, pool_stride, padding=1) if pool_stride else None
        self.shortcut = nn.Conv2d(in_channels, widths[-1], 1, pool_stride, bias=False) if pool_stride else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for i, sep in enumerate(self.seps):
            # Not in place: the shortcut still reads x.
            out = sep(F.relu(out) if i > 0 or self.relu_first else out)
        if self.pool is None:
            return x + out
        return self.shortcut(x) + self.pool(out)


# name -> entry blocks (width, pool stride, ReLU before the first separable conv), middle blocks, exit widths
# (exit block's two separable convs, then the two trailing separable convs).
VARIANTS = {
    "Xception41": {
        "entry": ((128, 2, False), (256, 2, True), (728, 2, True)),
        "middle": 8,
        "exit": ((728, 1024), (1536, 2048)),
    },
}
MIDDLE_WIDTH = 728


class Xception(nn.Module):
    """Stem, entry flow, middle flow, exit flow (``VARIANTS``), global average pool, fc."""

    def __init__(self, variant: str = "Xception41", num_classes: int = 1000) -> None:
        super().__init__()
        spec = VARIANTS[variant]
        self.stem = nn.Sequential(ConvBNAct(3, 32, 3, stride=2), ConvBNAct(32, 64, 3))
        entry, in_ch = [], 64
        for width, stride, relu_first in spec["entry"]:
            entry.append(XceptionBlock(in_ch, (width, width), stride, relu_first))
            in_ch = width
        self.entry = nn.Sequential(*entry)
        widths = (MIDDLE_WIDTH,) * 3
        self.middle = nn.Sequential(*(XceptionBlock(in_ch, widths, None) for _ in range(spec["middle"])))
        block_widths, tail_widths = spec["exit"]
        self.exit_block = XceptionBlock(in_ch, block_widths, 2)
        ins = (block_widths[-1], *tail_widths[:-1])
        self.exit_seps = nn.ModuleList(SeparableConv(i, o) for i, o in zip(ins, tail_widths))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(tail_widths[-1], num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.exit_block(self.middle(self.entry(self.stem(x))))
        for sep in self.exit_seps:
            x = F.relu(sep(x), inplace=True)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.forward_features(x)), 1))


def _block_names(key: str, block: XceptionBlock, paddle: str) -> dict[str, str]:
    names = {}
    for i, branch in enumerate("abc"[: len(block.seps)]):
        sep = f"{paddle}_branch2{branch}_weights"
        names |= conv_bn_names(f"{key}.seps.{i}.pw", f"{sep}_sep") | conv_bn_names(f"{key}.seps.{i}.dw", f"{sep}_dw")
    if block.shortcut is not None:
        names[f"{key}.shortcut.weight"] = f"{paddle}_branch1_weights"
    return names


def paddle_names(model: Xception) -> dict[str, str]:
    """Our state-dict keys -> the tensor names of Paddle's Xception programs."""
    names = conv_bn_names("stem.0", "entry_flow_conv1") | conv_bn_names("stem.1", "entry_flow_conv2")
    for i, block in enumerate(model.entry):
        names |= _block_names(f"entry.{i}", block, f"entry_flow_{i}")
    for i, block in enumerate(model.middle):
        names |= _block_names(f"middle.{i}", block, f"middle_flow_{i}")
    names |= _block_names("exit_block", model.exit_block, "exit_flow_1")
    for i in range(len(model.exit_seps)):
        names |= conv_bn_names(f"exit_seps.{i}.pw", f"exit_flow_{i + 2}_sep")
        names |= conv_bn_names(f"exit_seps.{i}.dw", f"exit_flow_{i + 2}_dw")
    return names | {"fc.weight": "fc_weights", "fc.bias": "fc_offset"}


# xception.py: convs (depthwise ones too) take fluid's default; the FC ~ Uniform(-stdv, stdv), stdv = 1 / sqrt(C).
PADDLE_INIT = (("fc", uniform_fan_in()),)


@register_model(
    ModelCfg(
        "Xception41",
        "xception",
        input_size=299,
        resize_short=320,
        top1=79.30,
        top5=94.53,
        weights=paddle_tar("Xception_41"),
        paddle_names=paddle_names,
        init_rules=PADDLE_INIT,
    )
)
def xception41(num_classes: int = 1000) -> Xception:
    """Xception41 (Paddle's ``Xception_41``): 3 entry, 8 middle, 1 exit block."""
    return Xception("Xception41", num_classes)


register_alias("Xception_41", "Xception41")

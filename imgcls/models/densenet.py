"""DenseNet (Huang et al. 2017) as the 2019 Paddle program builds it.

Paddle details kept: 7x7/2 conv + BN-ReLU stem, 3x3/2 max pool padding 1; dense layers are pre-activation
(BN-ReLU-1x1 conv to ``4 * growth``, BN-ReLU-3x3 conv to ``growth``) concatenated after their input; transitions are
BN-ReLU-1x1 conv halving the channels then a 2x2/2 average pool (floor); a final BN-ReLU, global average pool, FC.
Paddle's ``dropout=0`` default means no dropout layer at all.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import BatchNorm2d, ConvBNAct
from ._paddle_names import PADDLE_BN, TORCH_BN, conv_bn_names, linear_names
from ._registry import ModelCfg, paddle_tar, register_model
from .paddle_init import uniform_fan_in

BN_SIZE = 4  # bottleneck width = BN_SIZE * growth rate
# layers -> (stem channels, growth rate, dense layers per block)
VARIANTS = {
    121: (64, 32, (6, 12, 24, 16)),
    161: (96, 48, (6, 12, 36, 24)),
    169: (64, 32, (6, 12, 32, 32)),
    201: (64, 32, (6, 12, 48, 32)),
    264: (64, 32, (6, 12, 64, 48)),
}


def bn_relu(channels: int) -> nn.Sequential:
    return nn.Sequential(BatchNorm2d(channels), nn.ReLU(inplace=True))


class BNReLUConv(nn.Module):
    """Pre-activation unit: ``bn`` -> ReLU -> ``conv`` (no bias)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.bn = BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.relu(self.bn(x)))


class DenseLayer(nn.Module):
    """``cat([x, conv3x3(conv1x1(x))])``: adds ``growth`` channels."""

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.x1 = BNReLUConv(in_channels, BN_SIZE * growth, 1)
        self.x2 = BNReLUConv(BN_SIZE * growth, growth, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.x2(self.x1(x))], 1)


class Transition(nn.Module):
    """BN-ReLU-1x1 conv to ``out_channels``, then a 2x2/2 average pool."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.unit = BNReLUConv(in_channels, out_channels, 1)
        self.pool = nn.AvgPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.unit(x))


class DenseNet(nn.Module):
    """Stem, dense blocks separated by transitions, final BN-ReLU, global average pool, FC."""

    def __init__(self, layers: int = 121, num_classes: int = 1000) -> None:
        super().__init__()
        stem_channels, growth, block_layers = VARIANTS[layers]
        self.stem = ConvBNAct(3, stem_channels, 7, 2)
        self.pool = nn.MaxPool2d(3, 2, padding=1)
        features, channels = [], stem_channels
        for b, n_layers in enumerate(block_layers):
            block = [DenseLayer(channels + k * growth, growth) for k in range(n_layers)]
            features.append(nn.Sequential(*block))
            channels += n_layers * growth
            if b < len(block_layers) - 1:
                features.append(Transition(channels, channels // 2))
                channels //= 2
        self.features = nn.Sequential(*features)
        self.final = bn_relu(channels)
        self.head_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.final(self.features(self.pool(self.stem(x))))
        return self.fc(torch.flatten(self.head_pool(x), 1))


def _bn_names(key: str, bn_prefix: str) -> dict[str, str]:
    return {f"{key}.{ours}": bn_prefix + suffix for ours, suffix in zip(TORCH_BN, PADDLE_BN)}


def _unit_names(key: str, paddle_name: str) -> dict[str, str]:
    return _bn_names(f"{key}.bn", paddle_name + "_bn") | {f"{key}.conv.weight": paddle_name + "_weights"}


def paddle_names(model: DenseNet) -> dict[str, str]:
    """Paddle's DenseNet names: ``conv<block+2>_<layer>_x1_bn_scale``, ``conv<block+2>_<layer>_x1_weights``, the
    transition after block b ``conv<b+2>_blk_*``, the final BN ``conv5_blk_bn_*``."""
    names = conv_bn_names("stem", "conv1_weights", "conv1_bn")
    block = 2
    for f, module in enumerate(model.features):
        if isinstance(module, Transition):
            names |= _unit_names(f"features.{f}.unit", f"conv{block}_blk")
            block += 1
            continue
        for k in range(len(module)):
            for unit in ("x1", "x2"):
                names |= _unit_names(f"features.{f}.{k}.{unit}", f"conv{block}_{k + 1}_{unit}")
    names |= _bn_names("final.0", f"conv{block}_blk_bn")
    return names | linear_names("fc", "fc_weights", "fc_offset")


# densenet.py: convs take fluid's default; the FC ~ Uniform(-stdv, stdv), stdv = 1 / sqrt(C).
PADDLE_INIT = (("fc", uniform_fan_in()),)


def _cfg(name: str, top1: float, top5: float) -> ModelCfg:
    return ModelCfg(
        name,
        "densenet",
        top1=top1,
        top5=top5,
        weights=paddle_tar(name),
        paddle_names=paddle_names,
        init_rules=PADDLE_INIT,
    )


@register_model(_cfg("DenseNet121", 75.66, 92.58))
def densenet121(num_classes: int = 1000) -> DenseNet:
    """DenseNet121."""
    return DenseNet(121, num_classes)


@register_model(_cfg("DenseNet161", 78.57, 94.14))
def densenet161(num_classes: int = 1000) -> DenseNet:
    """DenseNet161: 96-channel stem, growth 48."""
    return DenseNet(161, num_classes)


@register_model(_cfg("DenseNet169", 76.81, 93.31))
def densenet169(num_classes: int = 1000) -> DenseNet:
    """DenseNet169."""
    return DenseNet(169, num_classes)


@register_model(_cfg("DenseNet201", 77.63, 93.66))
def densenet201(num_classes: int = 1000) -> DenseNet:
    """DenseNet201."""
    return DenseNet(201, num_classes)


@register_model(_cfg("DenseNet264", 77.96, 93.85))
def densenet264(num_classes: int = 1000) -> DenseNet:
    """DenseNet264."""
    return DenseNet(264, num_classes)

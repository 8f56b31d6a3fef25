"""GoogLeNet (Szegedy et al. 2014) exactly as the 2019 Paddle program builds it, with its two auxiliary heads.

Paddle details kept (they differ from torchvision's): no BN and no conv bias; the stem convs and the branch convs
have **no activation**, the only ReLU of an inception module comes after the concat of [1x1, 3x3, 5x5, pool-proj];
max pools 3x3/2 without padding in floor mode; the aux heads (on 4a and 4d) are avg pool 5/3 -> 1x1 conv (no act)
-> fc 1024 + ReLU -> dropout 0.7 -> fc; the main head is a 7x7/7 average pool over the 6x6 map (a global pool at
every size the Paddle program accepts) -> dropout 0.4 -> fc.

``forward`` returns the main logits in eval mode and ``(logits, [aux1_logits, aux2_logits])`` in training mode;
the training engine adds ``w * loss(aux)`` for ``w`` in ``aux_loss_weights``.
"""

from __future__ import annotations

import torch
from torch import nn

from ._registry import ModelCfg, paddle_tar, register_model
from .paddle_init import fluid_default, uniform_fan_in

AUX_LOSS_WEIGHTS = (0.3, 0.3)  # the weights of the GoogLeNet paper for the two aux losses


def conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    """Paddle's ``conv_layer``: "same" padding for odd kernels, no bias (and no activation)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, bias=False)


class Inception(nn.Module):
    """relu(cat[1x1, 1x1 -> 3x3, 1x1 -> 5x5, maxpool 3/1 -> 1x1]); the convs themselves are linear."""

    def __init__(self, in_channels: int, c1: int, c3_reduce: int, c3: int, c5_reduce: int, c5: int, proj: int) -> None:
        super().__init__()
        self.branch1x1 = conv(in_channels, c1, 1)
        self.branch3x3_reduce = conv(in_channels, c3_reduce, 1)
        self.branch3x3 = conv(c3_reduce, c3, 3)
        self.branch5x5_reduce = conv(in_channels, c5_reduce, 1)
        self.branch5x5 = conv(c5_reduce, c5, 5)
        self.pool = nn.MaxPool2d(3, stride=1, padding=1)
        self.branch_proj = conv(in_channels, proj, 1)
        self.relu = nn.ReLU(inplace=True)
        self.out_channels = c1 + c3 + c5 + proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [
            self.branch1x1(x),
            self.branch3x3(self.branch3x3_reduce(x)),
            self.branch5x5(self.branch5x5_reduce(x)),
            self.branch_proj(self.pool(x)),
        ]
        return self.relu(torch.cat(branches, 1))


class AuxHead(nn.Module):
    """avg pool 5/3 -> 1x1 conv to 128 (no act) -> fc 1024 + ReLU -> dropout -> fc. Needs a 3x3 pooled map (as
    Paddle's fc of 128*3*3 inputs does), i.e. a 11..13 px map, what 224 px inputs give."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.7) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(5, stride=3)
        self.conv = conv(in_channels, 128, 1)
        self.fc = nn.Linear(128 * 3 * 3, 1024)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc(torch.flatten(self.conv(self.pool(x)), 1)))
        return self.out(self.dropout(x))


# Paddle name suffix -> (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj); a max pool 3/2 follows 3b and 4e.
INCEPTIONS = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
POOL_AFTER = ("3b", "4e")
AUX_TAPS = ("4a", "4d")  # aux1 reads 4a's output, aux2 reads 4d's


class GoogLeNet(nn.Module):
    """Linear stem, nine inception modules (``INCEPTIONS``), global average pool, dropout, fc; two aux heads."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.4, aux_dropout: float = 0.7) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            conv(3, 64, 7, stride=2),
            nn.MaxPool2d(3, stride=2),
            conv(64, 64, 1),
            conv(64, 192, 3),
            nn.MaxPool2d(3, stride=2),
        )
        self.inceptions = nn.ModuleDict()
        self.pool = nn.MaxPool2d(3, stride=2)
        in_ch, aux_in = 192, []
        for name, widths in INCEPTIONS.items():
            self.inceptions[name] = Inception(in_ch, *widths)
            in_ch = self.inceptions[name].out_channels
            if name in AUX_TAPS:
                aux_in.append(in_ch)
        self.aux1 = AuxHead(aux_in[0], num_classes, aux_dropout)
        self.aux2 = AuxHead(aux_in[1], num_classes, aux_dropout)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_ch, num_classes)
        self.aux_loss_weights = AUX_LOSS_WEIGHTS

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.stem(x)
        taps = []
        for name, block in self.inceptions.items():
            x = block(x)
            if name in AUX_TAPS:
                taps.append(x)
            if name in POOL_AFTER:
                x = self.pool(x)
        logits = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        if not self.training:
            return logits
        return logits, [self.aux1(taps[0]), self.aux2(taps[1])]


def paddle_names(model: GoogLeNet) -> dict[str, str]:
    """Our state-dict keys -> the tensor names of Paddle's GoogLeNet program."""
    names = {
        "stem.0.weight": "conv1_weights",
        "stem.2.weight": "conv2_1x1_weights",
        "stem.3.weight": "conv2_3x3_weights",
    }
    branches = {
        "branch1x1": "1x1",
        "branch3x3_reduce": "3x3_reduce",
        "branch3x3": "3x3",
        "branch5x5_reduce": "5x5_reduce",
        "branch5x5": "5x5",
        "branch_proj": "3x3_proj",
    }
    for name in model.inceptions:
        for ours, paddle in branches.items():
            names[f"inceptions.{name}.{ours}.weight"] = f"inception_ince{name}_{paddle}_weights"
    for k in (1, 2):
        names |= {
            f"aux{k}.conv.weight": f"conv_o{k}_weights",
            f"aux{k}.fc.weight": f"fc_o{k}_weights",
            f"aux{k}.fc.bias": f"fc_o{k}_offset",
            f"aux{k}.out.weight": f"out{k}_weights",
            f"aux{k}.out.bias": f"out{k}_offset",
        }
    return names | {"fc.weight": "out_weights", "fc.bias": "out_offset"}


# googlenet.py: conv_layer and its FCs ("xavier") ~ Uniform(-stdv, stdv), stdv = sqrt(3 / (C_in * k * k)); the
# aux FCs' C is written down as 2048, although their input is 128 x 3 x 3 = 1152 features at 224 px. The
# inception 1x1 projection after the pool is a plain conv2d with fluid's default.
PADDLE_INIT = (
    ("*.branch_proj", fluid_default),
    ("aux*.fc", uniform_fan_in(3.0, fan_in=2048)),
    ("*", uniform_fan_in(3.0)),
)


@register_model(
    ModelCfg(
        "GoogLeNet",
        "googlenet",
        top1=70.70,
        top5=89.66,
        weights=paddle_tar("GoogLeNet"),
        # Paddle's inference-time (1 - p) of the dropout before each head's last fc.
        paddle_dropout={"out_weights": 0.6, "out1_weights": 0.3, "out2_weights": 0.3},
        paddle_names=paddle_names,
        init_rules=PADDLE_INIT,
    )
)
def googlenet(num_classes: int = 1000, **kw) -> GoogLeNet:
    """GoogLeNet with aux heads."""
    return GoogLeNet(num_classes, **kw)

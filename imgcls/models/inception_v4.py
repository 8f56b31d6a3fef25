"""InceptionV4 (Szegedy et al. 2016) exactly as the 2019 Paddle program builds it.

Paddle details kept: every conv is conv + BN + ReLU with padding 0 unless stated (so several 3x3s are "valid");
max pools 3x3/2 without padding (floor mode); the branch pools of the A/B/C blocks are 3x3/1 average pools with
padding 1 that exclude the padding from the count (Paddle's ``exclusive=True``); concat orders are Paddle's (the
pool branch first in every block except the stem's last mix); global average pool, dropout 0.2, fc.

Conv modules are keyed by their Paddle layer names (``"1x7"``, ``"3x3_reduce"``, ...), so the Paddle name of a
tensor is the block's prefix (``inception_b3_``) plus that key.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..layers import ConvBNAct
from ._paddle_names import layer_names
from ._registry import ModelCfg, paddle_tar, register_model
from .paddle_init import uniform_fan_in

# (Paddle layer name, out channels, kernel, stride, padding); kernel and padding may be (h, w).
ConvSpec = tuple[str, int, "int | tuple[int, int]", int, "int | tuple[int, int]"]


def conv_chain(in_channels: int, specs: list[ConvSpec]) -> nn.Sequential:
    """Conv + BN + ReLU layers in a row, keyed by Paddle layer name."""
    layers = OrderedDict()
    for name, out_channels, kernel, stride, padding in specs:
        layers[name] = ConvBNAct(in_channels, out_channels, kernel, stride=stride, padding=padding)
        in_channels = out_channels
    return nn.Sequential(layers)


def avg_pool_branch(in_channels: int, spec: ConvSpec) -> nn.Sequential:
    """3x3/1 average pool (padding 1, padding not counted) -> conv + BN + ReLU."""
    name, out_channels, kernel, stride, padding = spec
    layers = OrderedDict(pool=nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False))
    layers[name] = ConvBNAct(in_channels, out_channels, kernel, stride=stride, padding=padding)
    return nn.Sequential(layers)


class Mixed(nn.Module):
    """Runs the branches on the same input and concatenates their outputs along channels, in list order."""

    def __init__(self, *branches: nn.Module) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], 1)


class Fork(nn.Module):
    """``trunk``, then two convs on its output, concatenated (the split 1x3 / 3x1 branches of block C)."""

    def __init__(self, in_channels: int, trunk: list[ConvSpec], heads: list[ConvSpec]) -> None:
        super().__init__()
        self.trunk = conv_chain(in_channels, trunk)
        self.heads = Mixed(*(conv_chain(trunk[-1][1], [head]) for head in heads))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.trunk(x))


def stem() -> nn.Sequential:
    """299 -> 35: three convs, then three mixes of pool/conv branches (384 channels out)."""
    return nn.Sequential(
        conv_chain(3, [("conv1_3x3_s2", 32, 3, 2, 0), ("conv2_3x3_s1", 32, 3, 1, 0), ("conv3_3x3_s1", 64, 3, 1, 1)]),
        Mixed(nn.MaxPool2d(3, 2), conv_chain(64, [("inception_stem1_3x3_s2", 96, 3, 2, 0)])),
        Mixed(
            conv_chain(160, [("inception_stem2_3x3_reduce", 64, 1, 1, 0), ("inception_stem2_3x3", 96, 3, 1, 0)]),
            conv_chain(
                160,
                [
                    ("inception_stem2_1x7_reduce", 64, 1, 1, 0),
                    ("inception_stem2_1x7", 64, (7, 1), 1, (3, 0)),  # Paddle's names of the 7x1 / 1x7 pair swap
                    ("inception_stem2_7x1", 64, (1, 7), 1, (0, 3)),
                    ("inception_stem2_3x3_2", 96, 3, 1, 0),
                ],
            ),
        ),
        Mixed(conv_chain(192, [("inception_stem3_3x3_s2", 192, 3, 2, 0)]), nn.MaxPool2d(3, 2)),
    )


def inception_a(c: int = 384) -> Mixed:
    """35x35, 384 -> 384."""
    return Mixed(
        avg_pool_branch(c, ("1x1", 96, 1, 1, 0)),
        conv_chain(c, [("1x1_2", 96, 1, 1, 0)]),
        conv_chain(c, [("3x3_reduce", 64, 1, 1, 0), ("3x3", 96, 3, 1, 1)]),
        conv_chain(c, [("3x3_2_reduce", 64, 1, 1, 0), ("3x3_2", 96, 3, 1, 1), ("3x3_3", 96, 3, 1, 1)]),
    )


def reduction_a(c: int = 384) -> Mixed:
    """35 -> 17, 384 -> 1024."""
    return Mixed(
        nn.MaxPool2d(3, 2),
        conv_chain(c, [("3x3", 384, 3, 2, 0)]),
        conv_chain(c, [("3x3_2_reduce", 192, 1, 1, 0), ("3x3_2", 224, 3, 1, 1), ("3x3_3", 256, 3, 2, 0)]),
    )


def inception_b(c: int = 1024) -> Mixed:
    """17x17, 1024 -> 1024."""
    return Mixed(
        avg_pool_branch(c, ("1x1", 128, 1, 1, 0)),
        conv_chain(c, [("1x1_2", 384, 1, 1, 0)]),
        conv_chain(c, [("1x7_reduce", 192, 1, 1, 0), ("1x7", 224, (1, 7), 1, (0, 3)), ("7x1", 256, (7, 1), 1, (3, 0))]),
        conv_chain(
            c,
            [
                ("7x1_2_reduce", 192, 1, 1, 0),
                ("1x7_2", 192, (1, 7), 1, (0, 3)),
                ("7x1_2", 224, (7, 1), 1, (3, 0)),
                ("1x7_3", 224, (1, 7), 1, (0, 3)),
                ("7x1_3", 256, (7, 1), 1, (3, 0)),
            ],
        ),
    )


def reduction_b(c: int = 1024) -> Mixed:
    """17 -> 8, 1024 -> 1536."""
    return Mixed(
        nn.MaxPool2d(3, 2),
        conv_chain(c, [("3x3_reduce", 192, 1, 1, 0), ("3x3", 192, 3, 2, 0)]),
        conv_chain(
            c,
            [
                ("1x7_reduce", 256, 1, 1, 0),
                ("1x7", 256, (1, 7), 1, (0, 3)),
                ("7x1", 320, (7, 1), 1, (3, 0)),
                ("3x3_2", 320, 3, 2, 0),
            ],
        ),
    )


def inception_c(c: int = 1536) -> Mixed:
    """8x8, 1536 -> 1536."""
    return Mixed(
        avg_pool_branch(c, ("1x1", 256, 1, 1, 0)),
        conv_chain(c, [("1x1_2", 256, 1, 1, 0)]),
        Fork(c, [("1x1_3", 384, 1, 1, 0)], [("1x3", 256, (1, 3), 1, (0, 1)), ("3x1", 256, (3, 1), 1, (1, 0))]),
        Fork(
            c,
            [("1x1_4", 384, 1, 1, 0), ("1x3_2", 448, (1, 3), 1, (0, 1)), ("3x1_2", 512, (3, 1), 1, (1, 0))],
            [("1x3_3", 256, (1, 3), 1, (0, 1)), ("3x1_3", 256, (3, 1), 1, (1, 0))],
        ),
    )


BLOCKS = {"inception_a": 4, "inception_b": 7, "inception_c": 3}  # repeats of each block type
FEATURES = 1536


class InceptionV4(nn.Module):
    """Stem, 4 x A, reduction A, 7 x B, reduction B, 3 x C, global average pool, dropout, fc."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self.stem = stem()
        self.inception_a = nn.Sequential(*(inception_a() for _ in range(BLOCKS["inception_a"])))
        self.reduction_a = reduction_a()
        self.inception_b = nn.Sequential(*(inception_b() for _ in range(BLOCKS["inception_b"])))
        self.reduction_b = reduction_b()
        self.inception_c = nn.Sequential(*(inception_c() for _ in range(BLOCKS["inception_c"])))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(FEATURES, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduction_a(self.inception_a(self.stem(x)))
        return self.inception_c(self.reduction_b(self.inception_b(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.pool(self.forward_features(x)), 1)))


def _paddle_prefix(path: str) -> str:
    """``inception_b.2.branches...`` -> ``inception_b3_``; ``reduction_a...`` -> ``reduction_a_``; stem -> ''."""
    top, index = path.split(".")[:2]
    if top in BLOCKS:
        return f"{top}{int(index) + 1}_"
    return "" if top == "stem" else f"{top}_"


def paddle_names(model: InceptionV4) -> dict[str, str]:
    """Our state-dict keys -> Paddle tensor names: block prefix + Paddle layer name (the conv's module key)."""
    names = {}
    for path, module in model.named_modules():
        if isinstance(module, ConvBNAct):
            paddle = _paddle_prefix(path) + path.rsplit(".", 1)[1]
            names |= layer_names(path, paddle)
    return names | {"fc.weight": "final_fc_weights", "fc.bias": "final_fc_offset"}


# inception_v4.py: convs take fluid's default; the FC weight and bias ~ Uniform(-stdv, stdv), stdv = 1 / sqrt(C).
PADDLE_INIT = (("fc", uniform_fan_in(1.0, bias=True)),)


@register_model(
    ModelCfg(
        "InceptionV4",
        "inception_v4",
        input_size=299,
        resize_short=320,
        top1=80.77,
        top5=95.26,
        weights=paddle_tar("InceptionV4"),
        paddle_dropout={"final_fc_weights": 0.8},  # Paddle's inference-time (1 - p), p = 0.2
        paddle_names=paddle_names,
        init_rules=PADDLE_INIT,
    )
)
def inception_v4(num_classes: int = 1000, **kw) -> InceptionV4:
    """InceptionV4."""
    return InceptionV4(num_classes, **kw)

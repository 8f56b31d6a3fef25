"""VGG 11/13/16/19 (Simonyan & Zisserman 2014) exactly as the 2019 Paddle program builds them.

Paddle details kept: 3x3 convs **without bias** and without BN, each followed by ReLU; 2x2/2 max pool after
each of the five blocks; fc6 reads the flattened 512x7x7 map (224x224 inputs, no adaptive pool, as in Paddle);
dropout 0.5 after fc6 and after fc7 (so before fc7 and fc8).
"""

from __future__ import annotations

import torch
from torch import nn

from ._registry import ModelCfg, paddle_tar, register_model

BLOCK_CHANNELS = (64, 128, 256, 512, 512)
# depth -> convs per block.
DEPTHS = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
FEATURE_MAP = 7  # side of the last pooled map at 224x224
HIDDEN = 4096


def conv_block(in_channels: int, out_channels: int, convs: int) -> nn.Sequential:
    """``convs`` x (3x3 conv without bias + ReLU), then a 2x2/2 max pool."""
    layers = []
    for i in range(convs):
        layers += [nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1, bias=False)]
        layers += [nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.MaxPool2d(2, stride=2))


class VGG(nn.Module):
    """Five conv blocks (``DEPTHS``), then fc6 + ReLU + dropout, fc7 + ReLU + dropout, fc8."""

    def __init__(self, depth: int = 16, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        blocks, in_ch = [], 3
        for out_ch, convs in zip(BLOCK_CHANNELS, DEPTHS[depth]):
            blocks.append(conv_block(in_ch, out_ch, convs))
            in_ch = out_ch
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(
            nn.Linear(in_ch * FEATURE_MAP * FEATURE_MAP, HIDDEN),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(HIDDEN, HIDDEN),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(HIDDEN, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def paddle_names(model: VGG) -> dict[str, str]:
    """Our state-dict keys -> Paddle's ``conv<block>_<i>_weights`` and ``fc6``..``fc8`` names."""
    names = {}
    for b, block in enumerate(model.features):
        convs = [i for i, m in enumerate(block) if isinstance(m, nn.Conv2d)]
        for k, i in enumerate(convs, start=1):
            names[f"features.{b}.{i}.weight"] = f"conv{b + 1}_{k}_weights"
    fcs = [i for i, m in enumerate(model.classifier) if isinstance(m, nn.Linear)]
    for i, name in zip(fcs, ("fc6", "fc7", "fc8"), strict=True):
        names |= {f"classifier.{i}.weight": f"{name}_weights", f"classifier.{i}.bias": f"{name}_offset"}
    return names


# vgg.py names no initializer: convs take fluid's default, the FCs fluid's Xavier (paddle_init), biases 0.
def _cfg(name: str, top1: float, top5: float) -> ModelCfg:
    # Paddle's dropout scales by 0.5 at inference; folded into the FC after each dropout.
    dropout = {"fc7_weights": 0.5, "fc8_weights": 0.5}
    return ModelCfg(
        name, "vgg", top1=top1, top5=top5, weights=paddle_tar(name), paddle_dropout=dropout, paddle_names=paddle_names
    )


@register_model(_cfg("VGG11", 69.28, 89.09))
def vgg11(num_classes: int = 1000, **kw) -> VGG:
    """VGG11."""
    return VGG(11, num_classes, **kw)


@register_model(_cfg("VGG13", 70.02, 89.42))
def vgg13(num_classes: int = 1000, **kw) -> VGG:
    """VGG13."""
    return VGG(13, num_classes, **kw)


@register_model(_cfg("VGG16", 72.00, 90.69))
def vgg16(num_classes: int = 1000, **kw) -> VGG:
    """VGG16."""
    return VGG(16, num_classes, **kw)


@register_model(_cfg("VGG19", 72.56, 90.93))
def vgg19(num_classes: int = 1000, **kw) -> VGG:
    """VGG19."""
    return VGG(19, num_classes, **kw)

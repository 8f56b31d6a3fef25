"""AlexNet (Krizhevsky et al. 2012, the one-tower variant) exactly as the 2019 Paddle program builds it.

Paddle details kept: 64-192-384-256-256 convs with bias and ReLU, no normalisation; 3x3/2 max pools without
padding (floor mode); dropout 0.5 before fc6 and before fc7; fc6 reads the flattened 256x6x6 map, so the
network takes 224x224 inputs (any size whose last map is 6x6, as in Paddle; no adaptive pool).
"""

from __future__ import annotations

import torch
from torch import nn

from ._registry import ModelCfg, paddle_tar, register_model
from .paddle_init import uniform_fan_in

# Paddle layer name -> (out channels, kernel, stride, padding, max pool after it).
CONVS = {
    "conv1": (64, 11, 4, 2, True),
    "conv2": (192, 5, 1, 2, True),
    "conv3": (384, 3, 1, 1, False),
    "conv4": (256, 3, 1, 1, False),
    "conv5": (256, 3, 1, 1, True),
}
FEATURE_MAP = 6  # side of conv5's pooled map at 224x224
HIDDEN = 4096


class AlexNet(nn.Module):
    """Five conv layers (``CONVS``) and three FC layers, dropout before the first two FCs."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        layers, in_ch = [], 3
        for out_ch, kernel, stride, padding, pool in CONVS.values():
            layers += [nn.Conv2d(in_ch, out_ch, kernel, stride, padding), nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool2d(3, stride=2))
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(in_ch * FEATURE_MAP * FEATURE_MAP, HIDDEN),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(HIDDEN, HIDDEN),
            nn.ReLU(inplace=True),
            nn.Linear(HIDDEN, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def paddle_names(model: AlexNet) -> dict[str, str]:
    """Our state-dict keys -> Paddle's ``conv1_weights`` ... ``fc8_offset``, in layer order."""
    paddle = [*CONVS, "fc6", "fc7", "fc8"]
    ours = [f"features.{i}" for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]
    ours += [f"classifier.{i}" for i, m in enumerate(model.classifier) if isinstance(m, nn.Linear)]
    names = {}
    for key, name in zip(ours, paddle, strict=True):
        names |= {f"{key}.weight": f"{name}_weights", f"{key}.bias": f"{name}_offset"}
    return names


# alexnet.py: every conv and FC weight and bias ~ Uniform(-stdv, stdv), stdv = 1 / sqrt(C_in * k * k).
PADDLE_INIT = (("*", uniform_fan_in(1.0, bias=True)),)


@register_model(
    ModelCfg(
        "AlexNet",
        "alexnet",
        top1=56.72,
        top5=79.17,
        weights=paddle_tar("AlexNet"),
        paddle_dropout={"fc6_weights": 0.5, "fc7_weights": 0.5},  # Paddle's inference-time (1 - p)
        paddle_names=paddle_names,
        init_rules=PADDLE_INIT,
    )
)
def alexnet(num_classes: int = 1000, **kw) -> AlexNet:
    """AlexNet."""
    return AlexNet(num_classes, **kw)

"""SqueezeNet 1.0 and 1.1 (Iandola et al. 2016) exactly as the 2019 Paddle program builds them.

Paddle details kept: convs with bias and no BN; max pools 3x3/2 without padding in floor mode; 1.0's 7x7 stem
without padding, 1.1's 3x3 stem with padding 1; dropout 0.5 before the 1x1 classifier conv (whose ReLU is kept),
then a global average pool.
"""

from __future__ import annotations

import torch
from torch import nn

from ._registry import ModelCfg, paddle_tar, register_model


class Fire(nn.Module):
    """1x1 squeeze conv, then the concat of a 1x1 and a 3x3 expand conv (every conv followed by ReLU)."""

    def __init__(self, in_channels: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze1x1 = nn.Conv2d(in_channels, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.squeeze1x1(x))
        return torch.cat([self.relu(self.expand1x1(x)), self.relu(self.expand3x3(x))], 1)


POOL = "pool"
# version -> (stem (out, kernel, padding), then "pool" or a Fire's (squeeze, expand) per layer, fire2..fire9).
VERSIONS = {
    "1_0": (
        (96, 7, 0),
        [POOL, (16, 64), (16, 64), (32, 128), POOL, (32, 128), (48, 192), (48, 192), (64, 256), POOL, (64, 256)],
    ),
    "1_1": (
        (64, 3, 1),
        [POOL, (16, 64), (16, 64), POOL, (32, 128), (32, 128), POOL, (48, 192), (48, 192), (64, 256), (64, 256)],
    ),
}


class SqueezeNet(nn.Module):
    """Stem conv, fire modules and max pools (``VERSIONS``), dropout, 1x1 classifier conv + ReLU, global pool."""

    def __init__(self, version: str = "1_0", num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        (stem_ch, stem_k, stem_pad), layers = VERSIONS[version]
        self.stem = nn.Conv2d(3, stem_ch, stem_k, stride=2, padding=stem_pad)
        self.stem_act = nn.ReLU(inplace=True)
        features, in_ch = [], stem_ch
        for layer in layers:
            if layer == POOL:
                features.append(nn.MaxPool2d(3, stride=2))
            else:
                squeeze, expand = layer
                features.append(Fire(in_ch, squeeze, expand))
                in_ch = 2 * expand
        self.features = nn.Sequential(*features)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(in_ch, num_classes, 1)
        self.classifier_act = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.stem_act(self.stem(x)))
        x = self.classifier_act(self.classifier(self.dropout(x)))
        return torch.flatten(self.pool(x), 1)


def paddle_names(model: SqueezeNet) -> dict[str, str]:
    """Our state-dict keys -> the tensor names of Paddle's SqueezeNet programs (``fire<k>_squeeze1x1_weights`` ...)."""
    names = {"stem.weight": "conv1_weights", "stem.bias": "conv1_offset"}
    fires = [i for i, m in enumerate(model.features) if isinstance(m, Fire)]
    for k, i in enumerate(fires, start=2):
        for conv in ("squeeze1x1", "expand1x1", "expand3x3"):
            names[f"features.{i}.{conv}.weight"] = f"fire{k}_{conv}_weights"
            names[f"features.{i}.{conv}.bias"] = f"fire{k}_{conv}_offset"
    return names | {"classifier.weight": "conv10_weights", "classifier.bias": "conv10_offset"}


# squeezenet.py names no initializer: every conv takes fluid's default (paddle_init), its bias 0.
def _cfg(name: str, top1: float, top5: float) -> ModelCfg:
    # Paddle's dropout scales by 0.5 at inference; folded into the classifier conv.
    return ModelCfg(
        name,
        "squeezenet",
        top1=top1,
        top5=top5,
        weights=paddle_tar(name),
        paddle_dropout={"conv10_weights": 0.5},
        paddle_names=paddle_names,
    )


@register_model(_cfg("SqueezeNet1_0", 59.60, 81.66))
def squeezenet1_0(num_classes: int = 1000, **kw) -> SqueezeNet:
    """SqueezeNet 1.0."""
    return SqueezeNet("1_0", num_classes, **kw)


@register_model(_cfg("SqueezeNet1_1", 60.08, 81.85))
def squeezenet1_1(num_classes: int = 1000, **kw) -> SqueezeNet:
    """SqueezeNet 1.1."""
    return SqueezeNet("1_1", num_classes, **kw)

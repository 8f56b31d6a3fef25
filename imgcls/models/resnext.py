"""ResNeXt (Xie et al. 2017) and ResNeXt_vd as the 2019 Paddle programs build them: ResNet bottlenecks whose 3x3
conv is grouped (``cardinality`` groups of 4 channels at the first stage), output 256 * 2^stage channels.

The blocks, stems and the vd shortcut are ResNet's (``resnet.py``); only the widths, the groups and Paddle's tensor
names (stem ``res_conv1``, classifier ``fc_weights``/``fc_offset``) differ.
"""

from __future__ import annotations

from ._registry import ModelCfg, paddle_tar, register_model
from .paddle_init import uniform_fan_in
from .resnet import DEEP_STEM, DEPTHS, ResNet, ResNetSpec, res_paddle_names

OUT_CHANNELS = (256, 512, 1024, 2048)


def resnext_spec(layers: int, cardinality: int, vd: bool = False) -> ResNetSpec:
    """ResNeXt<layers>_<cardinality>x4d: inner width ``cardinality * 4 * 2^stage``."""
    widths = tuple(cardinality * 4 * 2**s for s in range(4))
    return ResNetSpec(
        DEPTHS[layers], widths, OUT_CHANNELS, groups=cardinality, stem=DEEP_STEM if vd else (64,), avg_down=vd
    )


def resnext_paddle_names(model: ResNet) -> dict[str, str]:
    stem = ("res_conv1",) if len(model.spec.stem) == 1 else ("conv1_1", "conv1_2", "conv1_3")
    return res_paddle_names(model, stem, ("fc_weights", "fc_offset"))


# resnext.py / resnext_vd.py: convs take fluid's default; the FC ~ Uniform(-stdv, stdv), stdv = 1 / sqrt(C).
PADDLE_INIT = (("fc", uniform_fan_in()),)


def _cfg(name: str, top1: float, top5: float, released: bool = True) -> ModelCfg:
    weights = paddle_tar(name) if released else None
    return ModelCfg(
        name,
        "resnext",
        top1=top1,
        top5=top5,
        weights=weights,
        paddle_names=resnext_paddle_names,
        init_rules=PADDLE_INIT,
    )


@register_model(_cfg("ResNeXt50_32x4d", 77.75, 93.82))
def resnext50_32x4d(num_classes: int = 1000) -> ResNet:
    """ResNeXt50, 32 groups."""
    return ResNet(resnext_spec(50, 32), num_classes)


@register_model(_cfg("ResNeXt50_vd_32x4d", 79.56, 94.62))
def resnext50_vd_32x4d(num_classes: int = 1000) -> ResNet:
    """ResNeXt50_vd, 32 groups."""
    return ResNet(resnext_spec(50, 32, vd=True), num_classes)


@register_model(_cfg("ResNeXt50_64x4d", 78.43, 94.13))
def resnext50_64x4d(num_classes: int = 1000) -> ResNet:
    """ResNeXt50, 64 groups."""
    return ResNet(resnext_spec(50, 64), num_classes)


@register_model(_cfg("ResNeXt50_vd_64x4d", 80.12, 94.86))
def resnext50_vd_64x4d(num_classes: int = 1000) -> ResNet:
    """ResNeXt50_vd, 64 groups."""
    return ResNet(resnext_spec(50, 64, vd=True), num_classes)


@register_model(_cfg("ResNeXt101_32x4d", 78.65, 94.19))
def resnext101_32x4d(num_classes: int = 1000) -> ResNet:
    """ResNeXt101, 32 groups."""
    return ResNet(resnext_spec(101, 32), num_classes)


# Paddle's README lists ResNeXt50_64x4d's accuracy (and tar link) for this row too; recorded as published.
# Paddle's README links ResNeXt50_64x4d's tar (and repeats its accuracy) on this row: no weights of its own.
@register_model(_cfg("ResNeXt101_64x4d", 78.43, 94.13, released=False))
def resnext101_64x4d(num_classes: int = 1000) -> ResNet:
    """ResNeXt101, 64 groups."""
    return ResNet(resnext_spec(101, 64), num_classes)


@register_model(_cfg("ResNeXt101_vd_64x4d", 80.78, 95.20))
def resnext101_vd_64x4d(num_classes: int = 1000) -> ResNet:
    """ResNeXt101_vd, 64 groups."""
    return ResNet(resnext_spec(101, 64, vd=True), num_classes)


@register_model(_cfg("ResNeXt152_32x4d", 78.98, 94.33))
def resnext152_32x4d(num_classes: int = 1000) -> ResNet:
    """ResNeXt152, 32 groups."""
    return ResNet(resnext_spec(152, 32), num_classes)


@register_model(_cfg("ResNeXt152_64x4d", 79.51, 94.71))
def resnext152_64x4d(num_classes: int = 1000) -> ResNet:
    """ResNeXt152, 64 groups."""
    return ResNet(resnext_spec(152, 64), num_classes)

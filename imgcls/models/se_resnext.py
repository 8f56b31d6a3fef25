"""SE-ResNeXt (Hu et al. 2018) and Paddle's SENet154_vd, as the 2019 Paddle programs build them.

Each ResNeXt bottleneck (``resnet.Bottleneck``) squeezes-and-excites its output (reduction 16) before the residual
add + ReLU, which ``SqueezeExcite`` does in one op. SE_ResNeXt50/101_32x4d: 7x7 stem, 32 groups, plain projection
shortcuts, dropout 0.5 before the FC. SENet154_vd (not the common SENet154): deep 3x3 stem (64, 64, 128), 64 groups
of 4 at the first stage, the vd avg-pool shortcut, depths 3/8/36/3, dropout 0.2.
"""

from __future__ import annotations

from ._paddle_names import conv_bn_names, linear_names
from ._registry import ModelCfg, paddle_tar, register_alias, register_model
from .paddle_init import uniform_fan_in
from .resnet import DEPTHS, ResNet, ResNetSpec, block_convs, iter_blocks

OUT_CHANNELS = (256, 512, 1024, 2048)
SE_BN = ("_bn_scale", "_bn_offset", "_bn_mean", "_bn_variance")
SE_CONV = {"conv1": "_x1", "conv2": "_x2", "conv3": "_x3", "shortcut.proj": "_prj"}


def se_resnext_spec(layers: int) -> ResNetSpec:
    """SE_ResNeXt<layers>_32x4d."""
    widths = tuple(128 * 2**s for s in range(4))
    return ResNetSpec(DEPTHS[layers], widths, OUT_CHANNELS, groups=32, se_reduction=16, dropout=0.5)


def senet154_vd_spec() -> ResNetSpec:
    widths = tuple(256 * 2**s for s in range(4))
    return ResNetSpec(
        DEPTHS[152], widths, OUT_CHANNELS, groups=64, stem=(64, 64, 128), avg_down=True, se_reduction=16, dropout=0.2
    )


def se_paddle_names(model: ResNet) -> dict[str, str]:
    """Paddle's SE-ResNeXt names: ``conv<n>_<i>_x1_weights``, ``conv<n>_<i>_x1_bn_scale``, ``fc<n>_<i>_sqz_weights``;
    stages are numbered from 2 (from 4 in SENet154_vd, whose stem convs are ``conv1_1..3``), blocks from 1."""
    deep_stem = len(model.spec.stem) > 1
    stem = ("conv1_1", "conv1_2", "conv1_3") if deep_stem else ("conv1",)
    names = {}
    for j, conv_name in enumerate(stem):
        names |= conv_bn_names(f"stem.{j}", conv_name + "_weights", conv_name, SE_BN)
    first_stage = 4 if deep_stem else 2
    for key, s, i, _, block in iter_blocks(model):
        tag = f"{s + first_stage}_{i + 1}"
        for attr in block_convs(block):
            conv_name = f"conv{tag}{SE_CONV[attr]}"
            names |= conv_bn_names(f"{key}.{attr}", conv_name + "_weights", conv_name, SE_BN)
        names |= linear_names(f"{key}.se.squeeze", f"fc{tag}_sqz_weights", f"fc{tag}_sqz_offset")
        names |= linear_names(f"{key}.se.excite", f"fc{tag}_exc_weights", f"fc{tag}_exc_offset")
    return names | linear_names("fc", "fc6_weights", "fc6_offset")


# se_resnext.py / se_resnext_vd.py: convs take fluid's default; the classifier and both SE FCs ~ Uniform(-stdv,
# stdv), stdv = 1 / sqrt(their input size); biases 0.
PADDLE_INIT = (("fc", uniform_fan_in()), ("*.se.*", uniform_fan_in()))


def _cfg(name: str, top1: float, top5: float, dropout: float, paddle_name: str | None = None) -> ModelCfg:
    # Paddle's dropout scales by (1 - p) at inference; folded into the classifier weight.
    return ModelCfg(
        name,
        "se_resnext",
        top1=top1,
        top5=top5,
        weights=paddle_tar(paddle_name or name),
        paddle_dropout={"fc6_weights": 1.0 - dropout},
        paddle_names=se_paddle_names,
        init_rules=PADDLE_INIT,
    )


@register_model(_cfg("SE_ResNeXt50_32x4d", 78.44, 93.96, 0.5))
def se_resnext50_32x4d(num_classes: int = 1000) -> ResNet:
    """SE-ResNeXt50 32x4d (its SE + residual tail is a fusable block)."""
    return ResNet(se_resnext_spec(50), num_classes)


@register_model(_cfg("SE_ResNeXt101_32x4d", 79.12, 94.20, 0.5))
def se_resnext101_32x4d(num_classes: int = 1000) -> ResNet:
    """SE-ResNeXt101 32x4d."""
    return ResNet(se_resnext_spec(101), num_classes)


@register_model(_cfg("SENet154_vd", 81.40, 95.48, 0.2, paddle_name="SENet_154_vd"))
def senet154_vd(num_classes: int = 1000) -> ResNet:
    """Paddle's SENet154_vd (``SE154_vd()`` in its code; released as ``SENet_154_vd_pretrained.tar``)."""
    return ResNet(senet154_vd_spec(), num_classes)


register_alias("SENet_154_vd", "SENet154_vd")
register_alias("SE_154_vd", "SENet154_vd")
register_alias("SE154_vd", "SENet154_vd")

"""Our state-dict keys -> the tensor names of Paddle's programs: the shared pieces of every family's name map.

Each family file builds ``paddle_names(model)`` (used by ``imgcls.convert``) out of these: a conv + BN layer
contributes its conv weight and the four BN tensors, an FC its weight and bias.
"""

from __future__ import annotations

PADDLE_BN = ("_scale", "_offset", "_mean", "_variance")
TORCH_BN = ("weight", "bias", "running_mean", "running_var")


def conv_bn_names(
    key: str, conv_weight: str, bn_prefix: str, bn_suffixes: tuple[str, ...] = PADDLE_BN
) -> dict[str, str]:
    """Names of one ``ConvBNAct`` at state-dict prefix ``key``: its conv weight and the four BN tensors."""
    names = {f"{key}.conv.weight": conv_weight}
    for ours, suffix in zip(TORCH_BN, bn_suffixes):
        names[f"{key}.bn.{ours}"] = bn_prefix + suffix
    return names


def layer_names(key: str, paddle: str, bn_prefix: str | None = None) -> dict[str, str]:
    """The usual naming of a Paddle conv layer ``paddle``: ``<paddle>_weights``, ``<paddle>_bn_scale``, ...
    (``bn_prefix`` replaces ``<paddle>_bn`` where a family names its BN otherwise)."""
    return conv_bn_names(key, f"{paddle}_weights", bn_prefix if bn_prefix is not None else f"{paddle}_bn")


def linear_names(key: str, weight: str, bias: str) -> dict[str, str]:
    return {f"{key}.weight": weight, f"{key}.bias": bias}

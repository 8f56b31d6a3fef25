"""Activations by name, so variant tables can say ``act="swish"``."""

from __future__ import annotations

from torch import nn

ACTIVATIONS = ("identity", "relu", "relu6", "swish", "hardswish", "leaky_relu", "sigmoid")


def make_activation(name: str | None) -> nn.Module:
    """``None``/'identity' -> Identity; 'relu', 'relu6', 'swish' (= silu), 'hardswish', 'leaky_relu' (slope 0.1,
    DarkNet's), 'sigmoid'."""
    if name in (None, "identity"):
        return nn.Identity()
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    if name in ("swish", "silu"):
        return nn.SiLU(inplace=True)
    if name == "hardswish":
        return nn.Hardswish(inplace=True)
    if name == "leaky_relu":
        return nn.LeakyReLU(0.1, inplace=True)
    if name == "sigmoid":
        return nn.Sigmoid()
    raise ValueError(f"unknown activation {name!r}; choose from {', '.join(ACTIVATIONS)}")


def activation_name(module: nn.Module) -> str:
    """Inverse of ``make_activation`` (the fused kernels take the activation by name)."""
    if isinstance(module, nn.Identity):
        return "identity"
    if isinstance(module, nn.ReLU6):
        return "relu6"
    if isinstance(module, nn.ReLU):
        return "relu"
    if isinstance(module, nn.SiLU):
        return "swish"
    if isinstance(module, nn.Hardswish):
        return "hardswish"
    if isinstance(module, nn.LeakyReLU):
        return "leaky_relu"
    if isinstance(module, nn.Sigmoid):
        return "sigmoid"
    raise ValueError(f"no activation name for {type(module).__name__}")

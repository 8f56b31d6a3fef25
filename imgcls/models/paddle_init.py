"""Fresh weights drawn as the Paddle 1.8 model programs draw them, layer by layer.

A family declares its rules next to its variant table: ``(pattern, rule)`` pairs, where ``pattern`` is a shell-style
pattern over a layer's qualified module name (``"fc"``, ``"*.se.*"``) and the first match wins. A conv or FC layer
that no pattern names gets fluid's default for its kind; every BatchNorm gets fluid's (scale 1, offset 0, moving
mean 0, moving variance 1). What fluid 1.8 does by default:

- ``fluid.layers.conv2d``: weight ~ Normal(0, sqrt(2 / (kh * kw * C_in))), where ``C_in`` is the input's channel count
  (``input.shape[1]``), ALL of it even for a grouped or depthwise conv; bias (when there is one) 0.
- ``fluid.layers.fc``: weight ~ Xavier uniform, limit sqrt(6 / (fan_in + fan_out)); bias 0.

Rules a model file may name instead (``ParamAttr(initializer=...)``):

- ``msra()``: ``fluid.initializer.MSRA()``, uniform with limit sqrt(6 / fan_in), fan_in per group
  (``C_in / groups * kh * kw``), like Paddle's ``_compute_fans`` on the weight's own shape; bias 0.
- ``uniform_fan_in(k, bias, fan_in)``: ``Uniform(-stdv, stdv)`` with stdv = sqrt(k / fan_in), fan_in being ALL input
  features (``C_in * kh * kw``, or an FC's input size), the way the model files compute ``stdv`` from
  ``input.shape`` (a few write the count down instead: ``fan_in``); the bias is drawn the same way when ``bias``
  (AlexNet, InceptionV4's FC), else 0.

Draws use torch's global RNG in module order, so a run seeded with ``torch.manual_seed`` rebuilds the same weights.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

Rule = Callable[[nn.Module], None]
Rules = Sequence[tuple[str, Rule]]
INITS = ("paddle", "torch")


def _fan_in_all(layer: nn.Module) -> int:
    """Input features the way fluid's model code counts them: all input channels times the kernel area."""
    if isinstance(layer, nn.Linear):
        return layer.in_features
    return layer.in_channels * math.prod(layer.kernel_size)


def _fan_in_group(layer: nn.Module) -> int:
    """Paddle's ``_compute_fans`` fan_in: the weight's own shape, i.e. per group for a grouped conv."""
    return layer.weight[0].numel()


def _zero_bias(layer: nn.Module) -> None:
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)


def fluid_default(layer: nn.Module) -> None:
    """fluid's default: a conv's weight Normal(0, sqrt(2 / (k*k*C_in))) over all input channels, an FC's Xavier
    uniform; bias 0."""
    if isinstance(layer, nn.Linear):
        limit = math.sqrt(6.0 / (layer.in_features + layer.out_features))
        nn.init.uniform_(layer.weight, -limit, limit)
    else:
        nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0 / _fan_in_all(layer)))
    _zero_bias(layer)


def msra() -> Rule:
    """``fluid.initializer.MSRA()``: uniform, limit sqrt(6 / fan_in) with the per-group fan_in; bias 0."""

    def rule(layer: nn.Module) -> None:
        limit = math.sqrt(6.0 / _fan_in_group(layer))
        nn.init.uniform_(layer.weight, -limit, limit)
        _zero_bias(layer)

    return rule


def uniform_fan_in(k: float = 1.0, bias: bool = False, fan_in: int | None = None) -> Rule:
    """``Uniform(-stdv, stdv)``, stdv = sqrt(k / fan_in) over all input features (or the ``fan_in`` the model file
    writes down as a constant); the bias too when ``bias``, else 0."""

    def rule(layer: nn.Module) -> None:
        limit = math.sqrt(k / (fan_in or _fan_in_all(layer)))
        nn.init.uniform_(layer.weight, -limit, limit)
        if bias and layer.bias is not None:
            nn.init.uniform_(layer.bias, -limit, limit)
        else:
            _zero_bias(layer)

    return rule


def rule_for(name: str, rules: Rules) -> Rule:
    """The first rule whose pattern matches the qualified module name ``name``, else fluid's default."""
    for pattern, rule in rules:
        if fnmatch.fnmatchcase(name, pattern):
            return rule
    return fluid_default


@torch.no_grad()
def init_like_paddle(model: nn.Module, rules: Rules = ()) -> nn.Module:
    """Redraw every parameter of ``model`` as its Paddle program would (see the module doc); returns ``model``.
    Raises TypeError on a layer with parameters that is not a conv, an FC or a BatchNorm (no rule is known)."""
    for name, module in model.named_modules():
        if not any(True for _ in module.parameters(recurse=False)):
            continue
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
            module.reset_running_stats()
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            rule_for(name, rules)(module)
        else:
            raise TypeError(f"no Paddle initializer known for {name} ({type(module).__name__})")
    return model

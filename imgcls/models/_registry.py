"""Model registry: one name -> one builder plus its config record (preprocessing contract, published accuracy).

Families register their variants with ``@register_model(ModelCfg(...))``; users call ``create_model`` and
``list_models``. The cfg is the single source of truth for input size, resize-short size and mean/std, which
train/eval/infer take as defaults.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from ..layers import set_fused

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelCfg:
    """Everything about a model that is not its architecture."""

    name: str
    family: str
    input_size: int = 224
    resize_short: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    top1: float | None = None  # the seed's published ImageNet val accuracy, in percent
    top5: float | None = None
    # Paddle folds dropout as a (1-p) factor at inference; the converter scales these tensors' weights.
    paddle_dropout: dict[str, float] = field(default_factory=dict)
    # (model) -> {torch state_dict key: paddle tensor name}; every trainable tensor and BN buffer.
    paddle_names: Callable[[nn.Module], dict[str, str]] | None = None


_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_CFGS: dict[str, ModelCfg] = {}
_ALIASES: dict[str, str] = {}  # other spellings (Paddle code / fixture names) -> registered name


def register_model(cfg: ModelCfg) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register ``builder(num_classes=..., **family_options)`` under ``cfg.name``; a duplicate name raises. Builders
    know nothing of the fused kernels: ``create_model`` flips them on the built model (``layers.set_fused``)."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if cfg.name in _BUILDERS:
            raise ValueError(f"model {cfg.name!r} is registered twice")
        _BUILDERS[cfg.name] = builder
        _CFGS[cfg.name] = cfg
        return builder

    return wrap


def register_alias(alias: str, name: str) -> None:
    """Accept ``alias`` wherever a model name is taken (not listed by ``list_models``)."""
    if alias in _BUILDERS or alias in _ALIASES:
        raise ValueError(f"alias {alias!r} is already a model name or alias")
    _ALIASES[alias] = name


def canonical_name(name: str) -> str:
    """The registered name for ``name`` or one of its aliases; raises KeyError listing close matches."""
    name = _ALIASES.get(name, name)
    if name not in _BUILDERS:
        raise _unknown(name)
    return name


def _unknown(name: str) -> KeyError:
    close = difflib.get_close_matches(name, list(_BUILDERS), n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see imgcls.models.list_models()"
    return KeyError(f"unknown model {name!r}{hint}")


def create_model(name: str, num_classes: int = 1000, fused: bool = False, **kwargs) -> nn.Module:
    """Build a registered model (``kwargs``: its family's options), then ``set_fused(model, fused)``: with
    ``fused=True`` its fusable blocks run the Triton kernels where available."""
    name = canonical_name(name)
    model = set_fused(_BUILDERS[name](num_classes=num_classes, **kwargs), fused)
    model.default_cfg = _CFGS[name]
    return model


def get_model_cfg(name: str) -> ModelCfg:
    """The config record of a registered model."""
    return _CFGS[canonical_name(name)]


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, optionally filtered by a shell-style pattern (``'ResNet*'``), in registration order."""
    names = list(_BUILDERS)
    if pattern:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    return names

"""Model registry: one name -> one builder plus its config record (preprocessing contract, published accuracy,
Paddle's released weights).

Families register their variants with ``@register_model(ModelCfg(...))``; users call ``create_model`` (in
``factory``, which adds the released weights) and ``list_models``. The cfg is the single source of truth for input
size, resize-short size and mean/std, which train/eval/infer take as defaults, and for where Paddle's released
ImageNet weights of the model live (``weights``: the tar's file name on ``PADDLE_WEIGHTS_HOST``).
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from ..layers import set_fused
from .paddle_init import INITS, Rules, init_like_paddle

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Where Paddle's README links its released ImageNet weights. A few of its links say http; the host serves every file
# over https, which is what we fetch.
PADDLE_WEIGHTS_HOST = "https://paddle-imagenet-models-name.bj.bcebos.com"


def paddle_tar(paddle_name: str) -> str:
    """The file name Paddle releases a model's ImageNet weights under: ``<paddle_name>_pretrained.tar``."""
    return f"{paddle_name}_pretrained.tar"


@dataclass(frozen=True)
class ModelCfg:
    """Everything about a model that is not its architecture."""

    name: str
    family: str
    input_size: int = 224
    resize_short: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    top1: float | None = None  # Paddle's published ImageNet val accuracy, in percent
    top5: float | None = None
    # File name of Paddle's released ImageNet weights on PADDLE_WEIGHTS_HOST (top1/top5 are theirs); None: none.
    weights: str | None = None
    # Paddle folds dropout as a (1-p) factor at inference; the converter scales these tensors' weights.
    paddle_dropout: dict[str, float] = field(default_factory=dict)
    # (model) -> {torch state_dict key: paddle tensor name}; every trainable tensor and BN buffer.
    paddle_names: Callable[[nn.Module], dict[str, str]] | None = None
    # How the Paddle program initializes the layers its model file names (paddle_init: (pattern, rule), first match
    # wins); every other layer gets fluid's default.
    init_rules: Rules = ()


_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_CFGS: dict[str, ModelCfg] = {}
_ALIASES: dict[str, str] = {}  # other spellings (Paddle code / fixture names) -> registered name


def register_model(cfg: ModelCfg) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register ``builder(num_classes=..., **family_options)`` under ``cfg.name``; a duplicate name raises. Builders
    know nothing of the fused kernels: ``build_model`` flips them on the built model (``layers.set_fused``)."""

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


def build_model(name: str, num_classes: int = 1000, fused: bool = False, init: str = "paddle", **kwargs) -> nn.Module:
    """Build a registered model with fresh weights (``kwargs``: its family's options), then
    ``set_fused(model, fused)``: with ``fused=True`` its fusable blocks run the Triton kernels where available.
    ``init="paddle"`` draws the weights as the Paddle program does (``paddle_init``), ``"torch"`` keeps torch's
    default initialization of each layer."""
    name = canonical_name(name)
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
    model = _BUILDERS[name](num_classes=num_classes, **kwargs)
    if init == "paddle":
        init_like_paddle(model, _CFGS[name].init_rules)
    model = set_fused(model, fused)
    model.default_cfg = _CFGS[name]
    return model


def get_model_cfg(name: str) -> ModelCfg:
    """The config record of a registered model."""
    return _CFGS[canonical_name(name)]


def weights_url(cfg: ModelCfg) -> str | None:
    """Paddle's URL of the model's released ImageNet weights, or None when Paddle released none."""
    return f"{PADDLE_WEIGHTS_HOST}/{cfg.weights}" if cfg.weights else None


def model_info(name: str) -> dict:
    """A registered model's record as plain data: name, family, input_size, resize_short, mean, std, top1, top5
    (Paddle's published ImageNet-val accuracy, percent), weights (the released tar's file name) and weights_url
    (Paddle's URL; None for both when no weights were released)."""
    cfg = get_model_cfg(name)
    info = {key: getattr(cfg, key) for key in ("name", "family", "input_size", "resize_short", "mean", "std")}
    info.update(top1=cfg.top1, top5=cfg.top5, weights=cfg.weights, weights_url=weights_url(cfg))
    return info


def list_models(pattern: str | None = None, pretrained: bool = False) -> list[str]:
    """Registered model names, optionally filtered by a shell-style pattern (``'ResNet*'``), in registration order;
    ``pretrained=True``: only those with Paddle's released ImageNet weights."""
    names = list(_BUILDERS)
    if pattern:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    if pretrained:
        names = [n for n in names if _CFGS[n].weights]
    return names

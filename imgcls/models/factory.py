"""``create_model``: a registered model, with fresh weights or with Paddle's released ImageNet weights.

``pretrained=True`` fetches the model's released tar once (``imgcls.hub``: download, convert, cache, verify) and
loads it; with another ``num_classes`` every tensor but the classifier is loaded, and one line on stderr says so.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from ._registry import build_model, canonical_name


def create_model(
    name: str,
    num_classes: int = 1000,
    fused: bool = False,
    pretrained: bool = False,
    init: str = "paddle",
    **kwargs,
) -> nn.Module:
    """Build a registered model (``kwargs``: its family's options), then ``set_fused(model, fused)``: with
    ``fused=True`` its fusable blocks run the Triton kernels where available. ``pretrained=True`` loads Paddle's
    released ImageNet weights (``list_models(pretrained=True)`` names the models that have them). Fresh weights are
    drawn from torch's RNG as the Paddle program draws them (``init="paddle"``, see docs/models.md) or with torch's
    default initialization (``init="torch"``); loaded weights replace them."""
    name = canonical_name(name)
    weights = None
    if pretrained:  # first: a model without released weights fails before it is built
        # Imported here: the hub converts with imgcls.convert, which builds models through the registry.
        from imgcls.hub import released_weights

        weights = released_weights(name)
    model = build_model(name, num_classes=num_classes, fused=fused, init=init, **kwargs)
    if weights is not None:
        load_all_but_classifier(model, weights, name)
    return model


def load_all_but_classifier(model: nn.Module, weights: dict[str, torch.Tensor], source: str) -> list[str]:
    """Load ``weights`` into ``model``: every tensor must fit, except the classifier's (the tensors whose shape
    differs only in the class count), which stay fresh and are named in one line on stderr. Returns their keys;
    ValueError when anything else differs."""
    own = model.state_dict()
    skipped = [k for k, v in weights.items() if k in own and _differs_in_classes(v.shape, own[k].shape)]
    try:
        result = model.load_state_dict({k: v for k, v in weights.items() if k not in skipped}, strict=False)
    except RuntimeError as e:  # other shapes differ (family options that change the architecture)
        raise ValueError(f"the weights of {source} do not fit this model: {str(e).splitlines()[-1].strip()}") from None
    missing = [k for k in result.missing_keys if k not in skipped]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"the weights of {source} do not fit this model: missing {missing[:4]}, unexpected "
            f"{result.unexpected_keys[:4]}"
        )
    if skipped:
        classes = ", ".join(f"{weights[k].shape[0]} -> {own[k].shape[0]}" for k in skipped[:1])
        print(
            f"loaded {source}'s weights except the classifier ({', '.join(skipped)}: {classes} classes; trained from "
            "scratch)",
            file=sys.stderr,
        )
    return skipped


def _differs_in_classes(saved: torch.Size, own: torch.Size) -> bool:
    return len(saved) == len(own) >= 1 and saved[0] != own[0] and saved[1:] == own[1:]

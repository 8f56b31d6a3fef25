"""Which input sizes a model takes, found by running it on the meta device (shapes only: no memory, no arithmetic).

Every model takes its config's ``input_size``. Smaller inputs shrink the feature maps until a pooling or
convolution window no longer fits; models whose classifier is a fixed-size linear layer over the flattened features
(AlexNet, VGG, as in Paddle) take their own size only. A size that fails shows up here before any data is read,
instead of as a shape error from the first training step.
"""

from __future__ import annotations

import torch
from torch import nn

from ._registry import build_model, get_model_cfg


def _meta_model(name: str, train: bool) -> nn.Module:
    with torch.device("meta"):
        return build_model(name, num_classes=2).train(train)  # train mode: auxiliary heads run too


def _forward_error(model: nn.Module, size: int) -> str | None:
    """The first line of the error a forward at ``size`` px raises, or None when it runs."""
    try:
        with torch.no_grad():
            model(torch.empty(2, 3, size, size, device="meta"))
    except NotImplementedError:  # an op without a meta kernel: nothing can be told here
        return None
    except (RuntimeError, ValueError) as e:
        return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return None


def _boundary(model: nn.Module, runs: int, fails: int) -> int:
    """The size nearest ``fails`` that still runs, given that ``runs`` runs and ``fails`` fails (either side: feature
    maps only grow with the input, so the sizes that run form one range)."""
    while abs(fails - runs) > 1:
        mid = (runs + fails) // 2
        if _forward_error(model, mid) is None:
            runs = mid
        else:
            fails = mid
    return runs


def input_size_problem(name: str, size: int, train: bool = False) -> str | None:
    """Why the registered model ``name`` cannot take ``size`` x ``size`` inputs (one line, with the sizes it takes),
    or None when it can."""
    default = get_model_cfg(name).input_size
    if size == default:
        return None
    model = _meta_model(name, train)
    if _forward_error(model, size) is None:
        return None
    smallest = _boundary(model, default, min(size, default)) if size < default else None
    if smallest is None:
        smallest = 1 if _forward_error(model, 1) is None else _boundary(model, default, 1)
    far = max(size, UPPER_PROBE * default)
    largest = None if _forward_error(model, far) is None else _boundary(model, default, far)
    if largest is None:
        return f"{size} px is too small for {name}: it needs at least {smallest} px"
    sized = "a classifier layer is sized for them"
    return f"{name} takes inputs of {smallest} to {largest} px only ({sized}), not {size} px"


UPPER_PROBE = 4  # a model that runs at 4x its own size has no upper limit (its classifier pools globally)

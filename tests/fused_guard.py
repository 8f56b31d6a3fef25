"""A guard for tests named for the fused kernels: inside ``reference_forbidden()`` a fused block that takes its
reference path on real tensors raises, so such a test cannot pass by running the reference (a silent fallback: no
GPU, no ``TRITON_INTERPRET=1``). Plain Python, so that test scripts run in a subprocess use it too."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator

import torch

# (module, attribute path) of each fusable block's reference path, as the block looks it up.
REFERENCE_PATHS = (
    ("imgcls.layers.channel_shuffle", "channel_shuffle_reference"),
    ("imgcls.layers.squeeze_excite", "squeeze_excite_reference"),
    ("imgcls.layers.dwconv_bn_act", "DWConvBNAct._reference_forward"),
)


def _forbid(original: Callable) -> Callable:
    """``original``, raising instead on real tensors (meta tensors, shapes only, may take it: the CLIs check on
    the meta device which input sizes a model takes, with an unfused copy)."""

    def forbidden(*args, **kwargs):
        if any(isinstance(a, torch.Tensor) and a.is_meta for a in args):
            return original(*args, **kwargs)
        raise AssertionError("a fused block ran its reference path instead of its kernel")

    return forbidden


@contextlib.contextmanager
def reference_forbidden() -> Iterator[None]:
    """Inside, every fusable block's reference path raises; the originals come back on exit."""
    saved = []
    try:
        for module_name, path in REFERENCE_PATHS:
            owner = importlib.import_module(module_name)
            *parents, name = path.split(".")
            for parent in parents:
                owner = getattr(owner, parent)
            saved.append((owner, name, getattr(owner, name)))
            setattr(owner, name, _forbid(getattr(owner, name)))
        yield
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)

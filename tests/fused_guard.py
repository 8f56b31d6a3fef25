"""A guard for tests named for the fused kernels: inside ``reference_forbidden()`` a fused block that takes its
reference path on real tensors raises, and every Triton kernel launch of the fused ops is recorded, so that such a
test can also prove its kernels ran (a block or op that quietly computes with the kernel module's ``reference``
raises nothing but launches nothing). Plain Python, so that test scripts run in a subprocess use it too."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

# (module, attribute path) of each fusable block's reference path, as the block looks it up.
REFERENCE_PATHS = (
    ("imgcls.layers.channel_shuffle", "channel_shuffle_reference"),
    ("imgcls.layers.squeeze_excite", "squeeze_excite_reference"),
    ("imgcls.layers.dwconv_bn_act", "DWConvBNAct._reference_forward"),
)
# The modules whose ``*_kernel`` attributes are the ``@triton.jit`` kernels; their launchers look them up by name
# at call time, so a stand-in set on the module sees every launch.
KERNEL_MODULES = (
    "imgcls.kernels._reductions",
    "imgcls.kernels.channel_shuffle",
    "imgcls.kernels.dwconv_bn_act",
    "imgcls.kernels.squeeze_excite",
)
# The kernel a fused block launches exactly once per forward call (a backward never launches it, except the
# shuffle's, whose backward is a shuffle too): block class name -> kernel names.
FORWARD_KERNELS = {
    "DWConvBNAct": ("_fwd_apply_kernel",),
    "SqueezeExcite": ("_scale_kernel",),
    "ChannelShuffle": ("_shuffle_kernel", "_interleave_kernel"),
}


@dataclass
class Launch:
    """One kernel launch: the kernel's name, its grid and every argument by name (launch options included)."""

    kernel: str
    grid: tuple[int, ...]
    args: dict

    def picked(self, names: list[str]) -> tuple[str, tuple[int, ...], dict]:
        """(kernel, grid, the named arguments): what a test states it expects of a launch."""
        return self.kernel, self.grid, {name: self.args.get(name) for name in names}


class RecordingKernel:
    """Stands in for a ``@triton.jit`` kernel: ``kernel[grid](...)`` is logged, then launched as usual."""

    def __init__(self, name: str, kernel, log: list[Launch]) -> None:
        self.name, self.kernel, self.log = name, kernel, log
        self.arg_names = kernel.arg_names  # so that recordings nest (an outer log sees the launches too)

    def __getitem__(self, grid: tuple[int, ...]) -> Callable:
        launch = self.kernel[grid]

        def run(*args, **kwargs):
            self.log.append(Launch(self.name, tuple(grid), {**dict(zip(self.kernel.arg_names, args)), **kwargs}))
            return launch(*args, **kwargs)

        return run


@contextlib.contextmanager
def recorded_launches() -> Iterator[list[Launch]]:
    """Inside, every launch of a kernel of ``KERNEL_MODULES`` is appended to the list this yields, then runs as
    usual; the kernels come back on exit. Imports the kernel modules: use it only where kernels can run."""
    log: list[Launch] = []
    saved = []
    try:
        for module_name in KERNEL_MODULES:
            module = importlib.import_module(module_name)
            for name, kernel in list(vars(module).items()):
                if name.endswith("_kernel"):
                    saved.append((module, name, kernel))
                    setattr(module, name, RecordingKernel(name, kernel, log))
        yield log
    finally:
        for module, name, kernel in reversed(saved):
            setattr(module, name, kernel)


def _forbid(original: Callable) -> Callable:
    """``original``, raising instead on real tensors (meta tensors, shapes only, may take it: the CLIs check on
    the meta device which input sizes a model takes, with an unfused copy)."""

    def forbidden(*args, **kwargs):
        if any(isinstance(a, torch.Tensor) and a.is_meta for a in args):
            return original(*args, **kwargs)
        raise AssertionError("a fused block ran its reference path instead of its kernel")

    return forbidden


@contextlib.contextmanager
def reference_forbidden() -> Iterator[list[Launch]]:
    """Inside, every fusable block's reference path raises, and the kernel launches are recorded in the list this
    yields (``recorded_launches``); the originals come back on exit."""
    saved = []
    try:
        for module_name, path in REFERENCE_PATHS:
            owner = importlib.import_module(module_name)
            *parents, name = path.split(".")
            for parent in parents:
                owner = getattr(owner, parent)
            saved.append((owner, name, getattr(owner, name)))
            setattr(owner, name, _forbid(getattr(owner, name)))
        with recorded_launches() as log:
            yield log
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


def launched(log: list[Launch], *kernels: str) -> int:
    """How many launches of ``kernels`` the log holds (the shuffle's backward interleave, ``SPLIT``, not counted)."""
    return sum(1 for launch in log if launch.kernel in kernels and not launch.args.get("SPLIT", False))


def assert_kernels_ran(model: nn.Module, log: list[Launch]) -> None:
    """In the forward pass ``log`` recorded (a backward may be in it too), each fused block of ``model`` launched
    its forward kernel: per block class, at least as many launches as blocks. A block that computed with any
    reference (its own, or the kernel module's ``reference``) launches nothing and leaves its class short."""
    from imgcls.layers import FusableBlock

    blocks: dict[str, int] = {}
    for m in model.modules():
        if isinstance(m, FusableBlock) and m.fused:
            blocks[type(m).__name__] = blocks.get(type(m).__name__, 0) + 1
    assert blocks, "the model has no fused block: nothing to prove"
    for name, count in blocks.items():
        kernels = FORWARD_KERNELS[name]
        got = launched(log, *kernels)
        assert got >= count, f"{count} fused {name} blocks launched {kernels} {got}x in one forward"

"""Data-parallel training across processes: ``torchrun --nproc_per_node N -m imgcls.train ...``.

torchrun (one node or many, with ``--nnodes`` and a rendezvous endpoint) starts one process per device and sets
RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; ``init_distributed`` reads them and joins the group:
NCCL with one GPU per LOCAL_RANK, gloo on CPU. Without those variables everything here is a no-op, so the same
code runs as a single process.

- Paddle's ``--batch_size`` is the global batch; ``per_rank_batch`` splits it (it must divide evenly);
- ``wrap_model`` gives DistributedDataParallel (gradients averaged across ranks), optionally with synchronized BN
  keeping Paddle's moving statistics: ``CudaSyncBatchNorm`` (PyTorch's SyncBatchNorm kernels) over NCCL,
  ``CpuSyncBatchNorm`` (differentiable all-reduces) over gloo;
- ``reduce_sums`` adds per-rank counters (loss sums, correct counts, images), so every rank reports global metrics;
- ``is_main`` / ``print0``: only rank 0 prints, logs and saves checkpoints.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules._functions import SyncBatchNorm as torch_sync_batch_norm  # what nn.SyncBatchNorm runs
from torch.nn.parallel import DistributedDataParallel

from imgcls.kernels.references import batch_norm, update_moving_stats
from imgcls.layers import BatchNorm2d, count_fused, set_fused
from imgcls.layers.batch_norm import track_batch


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: its global rank, its rank on the node, how many processes, its device."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None  # None: a single process, no process group

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment; (0, 0, 1) when not launched by it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    return rank, local_rank, world


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on CPU); a plain DistInfo when alone."""
    rank, local_rank, world = env_world()
    if world <= 1:
        return DistInfo(device=device)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs on this node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        kwargs = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world, **kwargs)
    return DistInfo(rank, local_rank, world, device, backend)


def cleanup() -> None:
    """Leave the process group (safe to call when there is none)."""
    global _flag_group
    _flag_group = None
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def end_worker_process(code: int | str | None) -> NoReturn:
    """Exit a torchrun worker with ``code`` (a SystemExit's code) without the interpreter's shutdown.

    Why: gloo's worker threads free a collective's work objects after the collective has returned, and those hold
    tensors whose Python objects need the GIL to be freed. When that happens while the interpreter shuts down,
    Python ends the thread by unwinding it through a C++ destructor and the process aborts (SIGABRT, "terminate
    called without an active exception"), after a run that had finished and saved everything: seen in about one
    of six 2-process CPU runs on a loaded 2-core machine (the process group outlives ``destroy_process_group``
    while DistributedDataParallel's C++ side holds it, so its threads cannot be joined first). Everything imgcls
    writes is closed or flushed by then; stdout and stderr are flushed here."""
    if isinstance(code, str):  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def is_main() -> bool:
    """True on rank 0, and in a single process. Before the process group exists (device choice, data resolution)
    torchrun's RANK says which process is rank 0, so early messages are printed once too."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return env_world()[0] == 0


def print0(*args, **kwargs) -> None:
    """``print`` on rank 0 only (the other ranks would repeat the same global numbers)."""
    if is_main():
        print(*args, **kwargs)


def per_rank_batch(global_batch: int, world_size: int, flag: str = "--batch_size") -> int:
    """Paddle's batch counts all devices: each rank takes an equal share; ValueError when it does not divide."""
    if global_batch % world_size:
        raise ValueError(f"{flag} {global_batch} is the global batch and must divide by the {world_size} processes")
    return global_batch // world_size


def reduce_sums(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum over ranks of per-rank counters (float64, so counts and loss sums stay exact enough)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [float(v) for v in values]
    # NCCL reduces CUDA tensors only; gloo takes CPU tensors.
    where = device if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=where)
    dist.all_reduce(t)
    return t.tolist()


_flag_group: dist.ProcessGroup | None = None  # a gloo group beside an NCCL one, for host-side flags


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is set on any rank (the same answer everywhere; every rank must call it at the same point).

    It is agreed over gloo, on the CPU: under NCCL a CUDA tensor would make the host wait for the GPU's queued work,
    once per call, which a per-step check (SIGTERM) cannot afford."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    global _flag_group
    if dist.get_backend() == "gloo":
        group = None  # the default group is already on the CPU
    else:
        if _flag_group is None:
            _flag_group = dist.new_group(backend="gloo")
        group = _flag_group
    votes = torch.tensor([int(flag)], dtype=torch.int32)
    dist.all_reduce(votes, group=group)
    return bool(votes.item())


def broadcast_object(obj: object) -> object:
    """Rank 0's ``obj`` on every rank (``obj`` itself in a single process); picklable values only."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_lists(items: list) -> list:
    """Concatenate every rank's list (e.g. the images each rank skipped), in rank order."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(items)
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, list(items))
    return [x for part in out for x in part]


class AllReduceSum(torch.autograd.Function):
    """Sum over ranks, differentiable: the gradient of a sum that every rank uses is the sum of their gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone()
        dist.all_reduce(out)
        return out


class CpuSyncBatchNorm(BatchNorm2d):
    """The zoo's BatchNorm2d with training statistics over the whole global batch, for gloo (PyTorch's SyncBatchNorm
    is CUDA-only).

    Mean and variance are formed from all-reduced per-channel sums (two passes: the sum, then the squared
    deviations from the global mean, as a single-process BN computes them). The all-reduces are differentiable
    (``AllReduceSum``), so gradients flow through the global statistics exactly as through a single-process BN
    over the whole batch. The moving averages take the global mean and biased variance (Paddle's, as BatchNorm2d).
    Eval mode uses the running statistics.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        xf = x if x.dtype in (torch.float32, torch.float64) else x.float()  # fp16/bf16: statistics in fp32
        local = torch.cat([xf.sum(dim=(0, 2, 3)), xf.new_tensor([xf.numel() / xf.shape[1]])])
        total = AllReduceSum.apply(local)
        count = total[-1]
        mean = total[:-1] / count
        centered = xf - mean.view(1, -1, 1, 1)
        var = AllReduceSum.apply(centered.pow(2).sum(dim=(0, 2, 3))) / count
        momentum = track_batch(self)
        if momentum is not None:
            update_moving_stats(self.running_mean, self.running_var, mean.detach(), var.detach(), momentum)
        out = centered * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out.to(x.dtype)


class CudaSyncBatchNorm(nn.SyncBatchNorm):
    """torch's SyncBatchNorm (its CUDA kernels, for NCCL) with Paddle's moving statistics: the running variance
    moves toward the biased variance of the global batch, as BatchNorm2d's toward its batch's.

    torch's synchronized step leaves the global mean and unbiased variance in fresh buffers (momentum 1); the
    moving averages are formed from them with the global count, every rank's batch being the same size (imgcls's
    loader gives each rank an equal share of the global batch and drops the last partial one)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        momentum = track_batch(self)
        if momentum is None:  # eval, or nothing to track: torch's forward
            return super().forward(x)
        self._check_input_dim(x)
        group = self.process_group or dist.group.WORLD
        world = dist.get_world_size(group) if dist.is_available() and dist.is_initialized() else 1
        if world == 1:
            return batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, True, momentum, self.eps)
        batch_mean, batch_var = torch.zeros_like(self.running_mean), torch.zeros_like(self.running_var)
        out = torch_sync_batch_norm.apply(x, self.weight, self.bias, batch_mean, batch_var, self.eps, 1.0, group, world)
        count = world * (x.numel() // x.shape[1])
        biased_var = batch_var * ((count - 1) / count)
        update_moving_stats(self.running_mean, self.running_var, batch_mean, biased_var, momentum)
        return out


def convert_bn(module: nn.Module, sync_class: type[nn.modules.batchnorm._BatchNorm]) -> nn.Module:
    """Swap every BatchNorm2d (the zoo's or torch's) for a ``sync_class`` sharing its parameters and buffers, in
    place; the state_dict keys stay the same."""
    for name, child in module.named_children():
        if type(child) in (BatchNorm2d, nn.BatchNorm2d):
            sync = sync_class(
                child.num_features,
                eps=child.eps,
                momentum=child.momentum,
                affine=child.affine,
                track_running_stats=child.track_running_stats,
            )
            # The same Parameter and buffer objects: an optimizer built before the swap still updates them.
            for key, value in [*child._parameters.items(), *child._buffers.items()]:
                setattr(sync, key, value)
            setattr(module, name, sync)
        else:
            convert_bn(child, sync_class)
    return module


def convert_cpu_sync_bn(module: nn.Module) -> nn.Module:
    """Every BatchNorm2d -> ``CpuSyncBatchNorm`` (gloo), in place."""
    return convert_bn(module, CpuSyncBatchNorm)


def convert_cuda_sync_bn(module: nn.Module) -> nn.Module:
    """Every BatchNorm2d -> ``CudaSyncBatchNorm`` (NCCL), in place."""
    return convert_bn(module, CudaSyncBatchNorm)


def convert_sync_bn(model: nn.Module, info: DistInfo) -> nn.Module:
    """Synchronized BN for the current backend (NCCL: CudaSyncBatchNorm; gloo: CpuSyncBatchNorm), both with
    Paddle's moving statistics. A fused model goes through the fused switch again, which keeps the blocks whose BN is
    now synchronized on their reference path (their kernel would normalize with this rank's statistics alone)."""
    if not info.enabled:
        return model
    fused_before = count_fused(model)
    model = convert_cuda_sync_bn(model) if info.backend == "nccl" else convert_cpu_sync_bn(model)
    if fused_before:
        held = fused_before - count_fused(set_fused(model, True))
        if held:
            print0(f"sync_bn: {held} fused blocks run their reference path (the fused kernel keeps per-rank stats)")
    return model


def wrap_model(model: nn.Module, info: DistInfo) -> nn.Module:
    """DistributedDataParallel around ``model`` when there are several ranks; the model itself otherwise."""
    if not info.enabled:
        return model
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def prepare_ddp(model: nn.Module, info: DistInfo, sync_bn: bool) -> nn.Module:
    """Synchronized BN in place (if asked) and the DDP wrapper; ``model`` stays the module checkpoints save."""
    if sync_bn and not info.enabled:
        print0("sync_bn: a single process already normalizes over the whole batch; plain BN")
    elif sync_bn:
        convert_sync_bn(model, info)
    return wrap_model(model, info)

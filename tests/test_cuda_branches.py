"""The Python branches that only a CUDA machine takes, run on the CPU where their logic allows: the fp16 loss-scaler
step, the scaler's checkpointed state, and the rank -> device / backend choice of a torchrun process. (The loader's
uint8 + normalize-on-device path: tests/reader/test_loader_paths.py.) What still runs only on a GPU is listed in
bench/results/README.md."""

from __future__ import annotations

import pytest
import torch

from imgcls import checkpoint as ckpt
from imgcls import distributed as dist
from imgcls.engine import Precision, train_step
from imgcls.optim import LRSchedule, build_optimizer

FP16 = Precision(torch.float16)


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def step_once(scaler: torch.amp.GradScaler | None, seed: int) -> tuple[dict, torch.nn.Module]:
    torch.manual_seed(seed)
    model = Tiny()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = build_optimizer(model, 0.1, 0.9, 1e-4)
    x, y = torch.randn(6, 3, 12, 12), torch.randint(0, 5, (6,))
    train_step(model, x, y, optimizer, LRSchedule("cosine_decay", 0.1, 10, 2), 0, precision=FP16, scaler=scaler)
    return start, model


def test_fp16_scaled_step_equals_unscaled_step(fresh_seed):
    """The scaler multiplies the loss by a power of two and divides the gradients back: the same update."""
    _, plain = step_once(None, fresh_seed)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    _, scaled = step_once(scaler, fresh_seed)
    for (name, a), b in zip(plain.state_dict().items(), scaled.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=2e-3, atol=1e-5, msg=name)
    assert scaler.get_scale() == 2.0**10  # no overflow: the scale is kept (growth only after 2000 good steps)


def test_fp16_overflowing_step_is_skipped_and_the_scale_lowered(fresh_seed):
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**60)  # fp16 gradients overflow at this scale
    start, model = step_once(scaler, fresh_seed)
    params = {n for n, _ in model.named_parameters()}
    for name, value in model.state_dict().items():
        if name in params:
            assert torch.equal(value, start[name]), name
    assert scaler.get_scale() == 2.0**59


def test_scaler_state_survives_a_checkpoint(tmp_path, fresh_seed):
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**60)
    _, model = step_once(scaler, fresh_seed)
    optimizer = build_optimizer(model, 0.1, 0.9, 1e-4)
    from imgcls.cli.layering import build_run_config
    from imgcls.train import get_args_parser

    config = build_run_config(get_args_parser().parse_args(["--image_shape=3,12,12"]), train=True, num_classes=5)
    target = ckpt.save_checkpoint(tmp_path / "0", model, ckpt.training_state(config, optimizer, 0, 1, None, scaler))
    restored = torch.amp.GradScaler("cpu")
    ckpt.restore_training_state(target, Tiny(), build_optimizer(Tiny(), 0.1, 0.9, 1e-4), restored)
    assert restored.get_scale() == scaler.get_scale() == 2.0**59


@pytest.fixture
def fake_cuda_node(monkeypatch):
    """A node with 4 GPUs as the process sees it through torch.cuda, and a process group that records its start."""
    calls = {}
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.setdefault("set_device", device))
    monkeypatch.setattr(dist.dist, "is_initialized", lambda: False)

    def init_process_group(backend, **kwargs):
        calls["init"] = (backend, kwargs)

    monkeypatch.setattr(dist.dist, "init_process_group", init_process_group)
    return calls


def test_each_torchrun_process_takes_the_gpu_of_its_local_rank(monkeypatch, fake_cuda_node):
    monkeypatch.setenv("RANK", "6")
    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "8")
    info = dist.init_distributed(torch.device("cuda"))
    assert (info.rank, info.local_rank, info.world_size, info.backend) == (6, 2, 8, "nccl")
    assert info.device == torch.device("cuda", 2) and fake_cuda_node["set_device"] == torch.device("cuda", 2)
    backend, kwargs = fake_cuda_node["init"]
    assert backend == "nccl" and kwargs["device_id"] == torch.device("cuda", 2)
    assert (kwargs["rank"], kwargs["world_size"]) == (6, 8) and not info.is_main


def test_a_local_rank_beyond_the_gpus_is_a_clear_error(monkeypatch, fake_cuda_node):
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("LOCAL_RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "8")
    with pytest.raises(RuntimeError, match="LOCAL_RANK 5 but only 4 GPUs"):
        dist.init_distributed(torch.device("cuda"))
    assert "init" not in fake_cuda_node


def test_cpu_processes_use_gloo_without_a_device_id(monkeypatch, fake_cuda_node):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    info = dist.init_distributed(torch.device("cpu"))
    assert info.backend == "gloo" and info.device == torch.device("cpu")
    assert fake_cuda_node["init"][0] == "gloo" and "device_id" not in fake_cuda_node["init"][1]


def test_ddp_wraps_a_gpu_model_on_its_own_device(monkeypatch):
    seen = {}

    def fake_ddp(model, device_ids=None):
        seen["device_ids"] = device_ids
        return model

    monkeypatch.setattr(dist, "DistributedDataParallel", fake_ddp)
    model = Tiny()
    dist.wrap_model(model, dist.DistInfo(3, 3, 4, torch.device("cuda", 3), "nccl"))
    assert seen["device_ids"] == [3]
    dist.wrap_model(model, dist.DistInfo(1, 1, 2, torch.device("cpu"), "gloo"))
    assert seen["device_ids"] is None

"""Model-level benchmarks: inference speed per model (eager, fused, BN-folded TorchScript) and the training step.

    .venv/bin/python -m pytest bench/bench_models.py --benchmark-only                 # CPU subset, ~4 minutes
    IMGCLS_BENCH_ALL=1 .venv/bin/python -m pytest bench/bench_models.py --benchmark-only   # the whole zoo
    .venv/bin/python -m pytest bench/bench_models.py --benchmark-only --benchmark-json=models.json
    .venv/bin/python bench/make_model_table.py models.json --command "<pytest cmd>" --out bench/results/models_cpu.md

Inference (the seed's "inference time" table): every registered model at batch 1 (latency) and a large batch
(throughput), for three paths on the same weights: ``eager`` (``create_model(name).eval()``), ``fused``
(``create_model(name, fused=True)``: Triton kernels on CUDA; on a CPU it is the reference path after one warning,
and ``extra_info["fused_ran"]`` says so) and ``folded`` (``imgcls.export.fold_bn`` then ``torch.jit.trace``, what
``export_inference`` ships). BN statistics are randomized first so that folding is really exercised; each case
checks its output against eager before timing. On a CPU only ``CPU_MODELS`` run unless ``IMGCLS_BENCH_ALL=1``.

Training step (issue 5): forward + loss + backward + SGD step of ShuffleNetV2_swish and MobileNetV2 at 224 px,
batch 256, fp16/bf16 autocast, NCHW and channels_last: eager vs ``torch.compile`` vs ``fused=True`` (needs CUDA),
plus one tiny CPU case (batch 8, 64 px, fp32). The first step's loss of every variant must match eager's (fp32:
within 1e-4; autocast: no further from eager's fp32 loss than twice eager's own low-precision error).
The CPU ``compile`` case compiles for ~2 minutes on a 2-core machine the first time; inductor's cache makes later
runs take seconds.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
import torch
from torch import nn

from imgcls.engine import AMP_DTYPES, Precision, backward_and_step, make_scaler
from imgcls.export import fold_bn
from imgcls.layers.fused import fused_supported, interpreter_enabled
from imgcls.losses import training_loss
from imgcls.models import create_model, get_model_cfg, list_models
from imgcls.models.testing import randomize_bn

BENCH_ALL = os.environ.get("IMGCLS_BENCH_ALL", "0") == "1"
ON_GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if ON_GPU else "cpu")
NO_GPU = "no CUDA GPU in this session: the batch-256 training-step cases need one"

# The default CPU run: one model per family under 30M parameters (its base width or smallest depth), plus ResNet50
# (the usual yardstick); ShuffleNetV2_swish (issue 5's target) stands for ShuffleNetV2. Left out: AlexNet and VGG
# (> 60M), ResNeXt50 (SE_ResNeXt50 covers grouped convs), Xception41 (299 px: ~10 s per batch of 16 on 2 cores).
CPU_MODELS = (
    "SqueezeNet1_1",
    "MobileNetV1",
    "MobileNetV2",
    "ShuffleNetV2_swish",
    "ResNet18",
    "ResNet50",
    "SE_ResNeXt50_32x4d",
    "DenseNet121",
    "GoogLeNet",
)
LARGE_BATCH = 64 if ON_GPU else 16
# (warm-up rounds, timed rounds) per batch size: enough to be stable, few enough to keep the CPU run bounded.
ROUNDS = {1: (10, 50), LARGE_BATCH: (5, 20)} if ON_GPU else {1: (3, 20), LARGE_BATCH: (1, 3)}
PATHS = ("eager", "fused", "folded")
# Largest allowed max|fast - eager| / max|eager| on fp32 logits (GPU: cuDNN may pick other conv algorithms).
REL_TOL = {"fused": 1e-3 if ON_GPU else 1e-6, "folded": 1e-4}


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want|: one number for logits of any scale."""
    return ((got.float() - want.float()).abs().max() / want.float().abs().max().clamp_min(1e-12)).item()


def synchronize() -> None:
    if ON_GPU:
        torch.cuda.synchronize()


def logits_of(output) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def record(benchmark, batch: int, **info) -> None:
    """Per-case facts (and img/s from the best round) in extra_info, where make_model_table.py reads them."""
    info.update(batch=batch, device=str(DEVICE), torch=torch.__version__, load1=round(os.getloadavg()[0], 2))
    info["threads"] = torch.get_num_threads()
    if ON_GPU:
        info["gpu"] = torch.cuda.get_device_name()
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None under --benchmark-disable
        info["img_per_s"] = round(batch / stats.stats.min, 2)
    benchmark.extra_info.update(info)


# ---------------------------------------------------------------------------------------------------------- inference


def inference_cases() -> list:
    """(model, batch, path) for every registered model, model outermost so one model's modules are built once."""
    cases = []
    for name in list_models():
        selected = ON_GPU or BENCH_ALL or name in CPU_MODELS
        marks = () if selected else pytest.mark.skip(reason="not in the CPU subset; set IMGCLS_BENCH_ALL=1 to run")
        for batch in (1, LARGE_BATCH):
            for path in PATHS:
                cases.append(pytest.param(name, batch, path, id=f"{name}-b{batch}-{path}", marks=marks))
    return cases


@dataclass
class InferenceModels:
    """One model's three paths on the same weights, plus eager's output on each benchmark input."""

    eager: nn.Module
    fused: nn.Module
    folded: Callable[[torch.Tensor], torch.Tensor]
    folded_bn_count: int
    inputs: dict[int, torch.Tensor]
    expected: dict[int, torch.Tensor]

    def runner(self, path: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """The model of one of ``PATHS``."""
        runners = {"eager": self.eager, "fused": self.fused, "folded": self.folded}
        if path not in runners:
            raise ValueError(f"unknown path {path!r}; expected one of {PATHS}")
        return runners[path]


@functools.lru_cache(maxsize=1)
def inference_models(name: str) -> InferenceModels:
    torch.manual_seed(0)
    eager = create_model(name).eval()
    randomize_bn(eager)
    fused = create_model(name, fused=True).eval()
    fused.load_state_dict(eager.state_dict())  # same parameters and buffers in both modes
    eager, fused = eager.to(DEVICE), fused.to(DEVICE)
    size = get_model_cfg(name).input_size
    gen = torch.Generator().manual_seed(1)
    inputs = {b: torch.randn(b, 3, size, size, generator=gen).to(DEVICE) for b in (1, LARGE_BATCH)}
    folded_module = fold_bn(eager)
    with torch.inference_mode():
        expected = {b: logits_of(eager(x)) for b, x in inputs.items()}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript's deprecation notice; export ships it
        folded = torch.jit.trace(folded_module, inputs[1], check_trace=False)
    return InferenceModels(eager, fused, folded, folded_module.folded_bn_count, inputs, expected)


@pytest.mark.parametrize("name,batch,path", inference_cases())
def test_inference(benchmark, name: str, batch: int, path: str) -> None:
    if path == "fused" and not ON_GPU and interpreter_enabled():
        pytest.skip("TRITON_INTERPRET=1 runs the kernels in Triton's interpreter: its timings mean nothing")
    models = inference_models(name)
    run = models.runner(path)
    x, want = models.inputs[batch], models.expected[batch]
    with torch.inference_mode(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        got = logits_of(run(x))
    assert got.shape == (batch, 1000) and torch.isfinite(got).all()
    error = relative_error(got, want)
    if path != "eager":
        assert error <= REL_TOL[path], f"{name} {path}: relative error {error:.2e} > {REL_TOL[path]:.0e} vs eager"

    def forward():
        with torch.inference_mode():
            run(x)
        synchronize()

    warmup, rounds = ROUNDS[batch]
    benchmark.pedantic(forward, rounds=rounds, warmup_rounds=warmup, iterations=1)
    info = {"model": name, "path": path, "input_size": x.shape[-1], "rel_err_vs_eager": float(f"{error:.3g}")}
    if path == "fused":
        info["fused_ran"] = "triton" if fused_supported(x) else "reference (no CUDA: fallback after one warning)"
    if path == "folded":
        info["folded_bn"] = models.folded_bn_count
    record(benchmark, batch, **info)


# ------------------------------------------------------------------------------------------------------ training step


@dataclass(frozen=True)
class StepCase:
    model: str
    batch: int
    size: int
    amp: str | None  # "fp16" | "bf16" | None (fp32)
    channels_last: bool
    device: str

    @property
    def precision(self) -> Precision:
        return Precision(AMP_DTYPES[self.amp] if self.amp else None, self.channels_last)


# A variant's first-step loss may differ from the fp32 eager loss by at most twice eager's own low-precision error
# (fused kernels round at other points than autocast), and always by LOSS_RTOL (fp32: compile reorders sums).
LOSS_RTOL = 1e-4
STEP_VARIANTS = ("eager", "compile", "fused")


def gpu_step_cases() -> list:
    cases = []
    for model in ("ShuffleNetV2_swish", "MobileNetV2"):
        for amp in ("fp16", "bf16"):
            for layout in ("nchw", "channels_last"):
                case = StepCase(model, 256, 224, amp, layout == "channels_last", "cuda")
                for variant in STEP_VARIANTS:
                    cases.append(pytest.param(case, variant, id=f"{model}-b256-224px-{amp}-{layout}-{variant}"))
    return cases


CPU_STEP = StepCase("ShuffleNetV2_swish", 8, 64, None, False, "cpu")


def build_step(case: StepCase, state: dict, fused: bool, compiled: bool) -> Callable[[], torch.Tensor]:
    """A closure running one training step (the engine's loss, momentum SGD, a GradScaler for fp16) on a fixed
    batch; it returns that step's loss, computed before the weights change."""
    device = torch.device(case.device)
    memory_format = torch.channels_last if case.channels_last else torch.contiguous_format
    model = create_model(case.model, fused=fused)
    model.load_state_dict(state)
    model = model.to(device, memory_format=memory_format).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    scaler = make_scaler(case.precision, device)
    if compiled:
        torch._dynamo.reset()  # each case compiles from scratch, away from the previous cases' guards and limits
    forward = torch.compile(model) if compiled else model
    images, labels = step_batch(case)
    aux_weights = tuple(getattr(model, "aux_loss_weights", ()))

    def step() -> torch.Tensor:
        with case.precision.autocast(device):
            output = forward(images)
        loss, _ = training_loss(output, labels, aux_weights=aux_weights)
        backward_and_step(loss, optimizer, scaler)
        return loss.detach()

    return step


@functools.lru_cache(maxsize=1)
def step_weights(case: StepCase) -> tuple[dict, float, float]:
    """Seeded initial weights, eager's first-step loss on them in the case's precision and in fp32."""
    torch.manual_seed(0)
    state = {k: v.clone() for k, v in create_model(case.model).state_dict().items()}
    eager = build_step(case, state, fused=False, compiled=False)().item()
    fp32 = build_step(replace(case, amp=None), state, fused=False, compiled=False)().item() if case.amp else eager
    return state, eager, fp32


@functools.lru_cache(maxsize=1)
def step_batch(case: StepCase) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    images = torch.randn(case.batch, 3, case.size, case.size, generator=gen).to(case.device)
    if case.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, torch.randint(0, 1000, (case.batch,), generator=gen).to(case.device)


def run_step_case(benchmark, case: StepCase, variant: str, warmup: int, rounds: int) -> None:
    state, want, fp32 = step_weights(case)
    step = build_step(case, state, fused=variant == "fused", compiled=variant == "compile")
    got = step().item()  # also compiles the compile variant
    allowed = max(2 * abs(want - fp32), LOSS_RTOL * abs(fp32))
    assert abs(got - fp32) <= allowed, f"{variant} first-step loss {got:.6f}: eager {want:.6f}, eager fp32 {fp32:.6f}"

    def timed_step():
        step()
        if case.device == "cuda":
            torch.cuda.synchronize()

    benchmark.pedantic(timed_step, rounds=rounds, warmup_rounds=warmup, iterations=1)
    info = {"model": case.model, "path": f"train_{variant}", "size": case.size, "amp": case.amp or "fp32"}
    info.update(channels_last=case.channels_last, first_loss=round(got, 6), eager_first_loss=round(want, 6))
    info["eager_fp32_first_loss"] = round(fp32, 6)
    if variant == "fused":
        probe = step_batch(case)[0]
        info["fused_ran"] = "triton" if fused_supported(probe) else "reference (no CUDA: fallback after one warning)"
    record(benchmark, case.batch, **info)


@pytest.mark.parametrize("case,variant", gpu_step_cases())
def test_train_step_gpu(benchmark, case: StepCase, variant: str) -> None:
    if not ON_GPU:
        pytest.skip(NO_GPU)
    run_step_case(benchmark, case, variant, warmup=5, rounds=20)


@pytest.mark.parametrize("variant", STEP_VARIANTS)
def test_train_step_cpu(benchmark, variant: str) -> None:
    if variant == "fused" and interpreter_enabled():
        pytest.skip("TRITON_INTERPRET=1 runs the kernels in Triton's interpreter: its timings mean nothing")
    run_step_case(benchmark, CPU_STEP, variant, warmup=3, rounds=10)

"""Model-level benchmarks: inference speed per model (eager, fused, BN-folded TorchScript) and the training step.

    .venv/bin/python -m pytest bench/bench_models.py --benchmark-only                 # CPU subset, ~4 minutes
    IMGCLS_BENCH_ALL=1 .venv/bin/python -m pytest bench/bench_models.py --benchmark-only   # the whole zoo
    .venv/bin/python -m pytest bench/bench_models.py --benchmark-only --benchmark-json=models.json
    .venv/bin/python bench/make_model_table.py models.json --command "<pytest cmd>" --out bench/results/models_cpu.md

Inference (Paddle's "inference time" table): every registered model at batch 1 (latency) and a large batch
(throughput), for three paths on the same weights: ``eager`` (``create_model(name).eval()``), ``fused``
(``create_model(name, fused=True)``: Triton kernels on CUDA; on a CPU it is the reference path after one warning,
and ``extra_info["fused_ran"]`` says so) and ``folded`` (``imgcls.export.fold_bn`` then ``torch.jit.trace``, what
``export_inference`` ships). BN statistics are randomized first so that folding is really exercised; each case
checks its output against eager before timing. On a CPU only ``CPU_MODELS`` run unless ``IMGCLS_BENCH_ALL=1``.

Training step: forward + loss + backward + SGD step of ShuffleNetV2_swish and MobileNetV2 at 224 px, batch 256,
fp16/bf16 autocast, NCHW and channels_last: eager vs ``torch.compile`` vs ``fused=True`` (needs CUDA), plus one tiny
CPU case (batch 8, 64 px, fp32). The models, the step and the correctness gate are imgcls.benchmark's (the one
model-throughput implementation; ``python -m imgcls.benchmark`` prints the same comparison as a table): each
variant's eval logits must match the fp32 eager model's within ``imgcls.benchmark.TOLERANCE`` before it is timed.
The CPU ``compile`` case compiles for a few minutes on a 2-core machine the first time; inductor's cache makes
later runs take seconds.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from imgcls import benchmark as throughput  # the implementation (pytest-benchmark's fixture is `benchmark`)
from imgcls.benchmark_report import Config
from imgcls.config import PrecisionConfig
from imgcls.engine import Precision, make_precision
from imgcls.export import fold_bn
from imgcls.layers.fused import fused_supported, interpreter_enabled
from imgcls.models import create_model, get_model_cfg, list_models
from imgcls.models.testing import randomize_bn

BENCH_ALL = os.environ.get("IMGCLS_BENCH_ALL", "0") == "1"
ON_GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if ON_GPU else "cpu")
NO_GPU = "no CUDA GPU on this machine: the batch-256 training-step cases need one"

# The default CPU run: one model per family under 30M parameters (its base width or smallest depth), plus ResNet50
# (the usual yardstick); ShuffleNetV2_swish (the fused kernels' target) stands for ShuffleNetV2. Left out: AlexNet
# and VGG (> 60M), ResNeXt50 (SE_ResNeXt50 covers grouped convs), Xception41 (299 px: ~10 s per batch of 16 on 2 cores).
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
        expected = {b: throughput.logits_of(eager(x)) for b, x in inputs.items()}
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
        got = throughput.logits_of(run(x))
    assert got.shape == (batch, 1000) and torch.isfinite(got).all()
    error = throughput.relative_error(got, want)
    if path != "eager":
        assert error <= REL_TOL[path], f"{name} {path}: relative error {error:.2e} > {REL_TOL[path]:.0e} vs eager"

    def forward():
        with torch.inference_mode():
            run(x)
        throughput.sync(DEVICE)

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

    def config(self, variant: str) -> Config:
        """imgcls.benchmark's configuration of one of ``STEP_VARIANTS``."""
        return Config(variant == "fused", self.amp is not None, self.channels_last, compiled=variant == "compile")


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


@functools.lru_cache(maxsize=1)
def step_reference(case: StepCase) -> tuple[dict, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded weights, the fixed batch (images in the case's layout, labels) and the fp32 NCHW eager model's eval
    logits on it: the reference every variant's logits are checked against (imgcls.benchmark's gate)."""
    torch.manual_seed(0)
    weights = {k: v.clone() for k, v in create_model(case.model).state_dict().items()}
    device = torch.device(case.device)
    gen = torch.Generator().manual_seed(2)
    images = torch.randn(case.batch, 3, case.size, case.size, generator=gen).to(device)
    labels = torch.randint(0, 1000, (case.batch,), generator=gen).to(device)
    reference = throughput.build_model(case.model, 1000, throughput.BASELINE, weights, device)
    want = throughput.eval_logits(reference, Precision(), images, device)
    if case.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return weights, images, labels, want


def run_step_case(benchmark_fixture, case: StepCase, variant: str, warmup: int, rounds: int) -> None:
    """imgcls.benchmark's model and training step for the variant: logits checked first, then timed."""
    weights, images, labels, want = step_reference(case)
    device, config = torch.device(case.device), case.config(variant)
    if config.compiled:
        torch._dynamo.reset()  # each case compiles from scratch, away from the previous cases' guards and limits
    model = throughput.build_model(case.model, 1000, config, weights, device)
    precision = make_precision(PrecisionConfig(config.amp, case.amp, case.channels_last), device)
    error = throughput.relative_error(throughput.eval_logits(model, precision, images, device), want)
    limit = throughput.TOLERANCE[precision.amp_dtype]
    assert error <= limit, f"{variant}: eval logits differ from fp32 eager's by {error:.2e} (limit {limit:.0e})"
    step = throughput.make_train_step(model, precision, images, labels, device)
    step()  # also compiles the compile variant's training graph

    def timed_step():
        step()
        throughput.sync(device)

    benchmark_fixture.pedantic(timed_step, rounds=rounds, warmup_rounds=warmup, iterations=1)
    info = {"model": case.model, "path": f"train_{variant}", "size": case.size, "amp": case.amp or "fp32"}
    info.update(channels_last=case.channels_last, logit_error=float(f"{error:.3g}"))
    if variant == "fused":
        info["fused_ran"] = "triton" if fused_supported(images) else "reference (no CUDA: fallback after one warning)"
    record(benchmark_fixture, case.batch, **info)


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

"""Model throughput: ``python -m imgcls.benchmark --model X [--batch_size B] [--image_size S] [--fused] [--amp]
[--channels_last] [--compile] [--steps N] [--json FILE]``, the source of the speed tables in bench/results/.

For every combination of ``--fused``, ``--amp`` and ``--channels_last`` (a flag left out means both values), one
row: training img/s (forward, backward, SGD step) and inference img/s (eval, no grad) on a fixed random batch, so
the numbers are the model's compute, not the data loader's. ``--compile`` adds, for each precision and layout, a
row of ``torch.compile`` of the plain (unfused) model, the baseline the fused kernels are meant to beat (compiling
takes minutes, so it is off unless asked for). Correctness first: each row's eval logits are compared with the
fp32 / NCHW / plain eager row's on the same weights and batch (eval mode: dropout would make training-mode logits
differ), and a row beyond its dtype's tolerance stops the run. Configurations are
timed in interleaved rounds (best round kept) so that a machine shared with other work slows every row alike;
speed-ups are ratios to the first row of the same run. This module is the one model-throughput implementation:
bench/bench_models.py times its training steps and models through it.
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings
from collections.abc import Callable

import torch
from torch import nn

from imgcls.benchmark_report import Config, Row, describe, record, table
from imgcls.cli.flags import ArgumentParser, add_bool, fail, input_side, pick_device, positive_int, run_command
from imgcls.config import PrecisionConfig
from imgcls.engine import Precision, backward_and_step, make_precision, make_scaler
from imgcls.losses import training_loss

# Largest |logit difference| / max |logit| accepted against the fp32 NCHW reference row (fp32: rounding of another
# summation order; bf16 / fp16: 8 / 11 mantissa bits through the whole network).
TOLERANCE = {None: 1e-3, torch.float16: 3e-2, torch.bfloat16: 1e-1}
BASELINE = Config(False, False, False)


def get_args_parser() -> argparse.ArgumentParser:
    """Model, batch, image size, the switches (left out: both values; --compile: off), timing rounds."""
    p = ArgumentParser("imgcls.benchmark", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="ShuffleNetV2_swish", help="registered model name")
    p.add_argument("--batch_size", type=positive_int, default=32, help="images per step")
    p.add_argument("--image_size", type=input_side, default=None, help="input side (default: the model's)")
    p.add_argument("--class_dim", type=positive_int, default=1000, help="classifier width")
    for name, help_text in (("fused", "Triton kernels"), ("amp", "autocast"), ("channels_last", "NHWC layout")):
        add_bool(p, name, None, f"{help_text}: True, False, or both when left out")
    add_bool(p, "compile", False, "add a torch.compile row (plain model) for each precision and layout")
    p.add_argument("--amp_dtype", default=None, choices=["fp16", "bf16"], help="autocast dtype (fp16 CUDA, bf16 CPU)")
    p.add_argument("--steps", type=positive_int, default=10, help="timed steps per round and mode")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before each round")
    p.add_argument("--rounds", type=positive_int, default=2, help="interleaved rounds; the best is kept")
    p.add_argument("--modes", nargs="+", default=["train", "infer"], choices=["train", "infer"])
    p.add_argument("--json", default=None, help="append the run (rows and machine) to this file as one JSON line")
    p.add_argument("--co", action="store_true", help="collect only: list the configurations, run nothing")
    add_bool(p, "use_gpu", None, "CUDA when present (default)")
    return p


def configs(args: argparse.Namespace) -> list[Config]:
    """Every combination the flags allow (the baseline, all False, first when it is among them), then with
    ``--compile`` a compiled row for each precision and layout."""
    values = [[False, True] if v is None else [v] for v in (args.fused, args.amp, args.channels_last)]
    todo = [Config(*combo) for combo in itertools.product(*values)]
    if args.compile:
        layouts = dict.fromkeys((c.amp, c.channels_last) for c in todo)
        todo += [Config(False, amp, channels_last, compiled=True) for amp, channels_last in layouts]
    return todo


def build_model(name: str, num_classes: int, config: Config, weights: dict, device: torch.device) -> nn.Module:
    """``name`` on the shared ``weights``, with ``config``'s kernels, layout and compilation, on ``device``."""
    from imgcls.models import create_model

    model = create_model(name, num_classes=num_classes, fused=config.fused)
    model.load_state_dict(weights)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = model.to(device)
    return torch.compile(model) if config.compiled else model


def build(
    args: argparse.Namespace, config: Config, device: torch.device, weights: dict[str, torch.Tensor]
) -> tuple[nn.Module, Precision]:
    """The model of ``config`` and its precision."""
    model = build_model(args.model, args.class_dim, config, weights, device)
    return model, make_precision(PrecisionConfig(config.amp, args.amp_dtype, config.channels_last), device)


def sync(device: torch.device) -> None:
    """Wait for the GPU (timings must cover the work, not just its launch)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def logits_of(output) -> torch.Tensor:
    """The main head's logits of a model output (a tuple for models with auxiliary heads)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want|: one number for logits of any scale."""
    return ((got.float() - want.float()).abs().max() / want.float().abs().max().clamp_min(1e-6)).item()


def make_train_step(
    model: nn.Module, precision: Precision, images: torch.Tensor, labels: torch.Tensor, device: torch.device
) -> Callable[[], torch.Tensor]:
    """A closure running one training step on the fixed batch (the engine's loss, SGD with momentum and weight
    decay, a GradScaler for fp16 on CUDA); it returns that step's fp32 main logits (detached)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    scaler = make_scaler(precision, device)
    aux_weights = tuple(getattr(model, "aux_loss_weights", ()))

    def step() -> torch.Tensor:
        model.train()  # the inference timings between rounds leave it in eval mode
        with precision.autocast(device):
            output = model(images)
        loss, logits = training_loss(output, labels, aux_weights=aux_weights)
        backward_and_step(loss, optimizer, scaler)
        return logits.detach().float()

    return step


def time_train(step: Callable[[], torch.Tensor], batch: int, steps: int, warmup: int, device: torch.device) -> float:
    """Images per second of ``steps`` training steps after ``warmup`` untimed ones."""
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            start = time.perf_counter()
        logits = step()
    sync(device)
    if not torch.isfinite(logits).all():
        raise FloatingPointError("training produced non-finite logits")
    return steps * batch / (time.perf_counter() - start)


@torch.no_grad()
def time_infer(
    model: nn.Module, precision: Precision, x: torch.Tensor, steps: int, warmup: int, device: torch.device
) -> float:
    """Images per second of an eval-mode forward without gradients."""
    model.eval()
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            start = time.perf_counter()
        with precision.autocast(device):
            model(x)
    sync(device)
    return steps * x.shape[0] / (time.perf_counter() - start)


@torch.no_grad()
def eval_logits(model: nn.Module, precision: Precision, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """fp32 eval logits (the inference gate compares them across configurations)."""
    model.eval()
    with precision.autocast(device):
        return logits_of(model(x)).float()


def check(rows: list[Row], logits: dict[Config, torch.Tensor], precisions: dict[Config, Precision]) -> None:
    """Every row's logits against the fp32 / NCHW / plain eager row's (built first, on the same weights)."""
    for row in rows:
        row.logit_error = relative_error(logits[row.config], logits[BASELINE])
        limit = TOLERANCE[precisions[row.config].amp_dtype]
        if row.logit_error > limit:
            raise AssertionError(f"{row.config}: logits differ by {row.logit_error:.2e} (limit {limit:.0e})")


def run(args: argparse.Namespace, device: torch.device) -> list[Row]:
    """Check, then measure every configuration on ``device``; returns the rows (the first one is the base)."""
    from imgcls.models import create_model, get_model_cfg

    size = args.image_size = args.image_size or get_model_cfg(args.model).input_size
    torch.manual_seed(0)
    weights = create_model(args.model, num_classes=args.class_dim).state_dict()
    x = torch.randn(args.batch_size, 3, size, size, device=device)
    y = torch.randint(0, args.class_dim, (args.batch_size,), device=device)
    rows = [Row(c) for c in configs(args)]
    models, precisions, inputs, logits, steps = {}, {}, {}, {}, {}  # per config
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fused fallback's one-time warning: reported in the table instead
        for config in [BASELINE, *[r.config for r in rows if r.config != BASELINE]]:
            models[config], precisions[config] = build(args, config, device, weights)
            inputs[config] = x.contiguous(memory_format=torch.channels_last) if config.channels_last else x
            logits[config] = eval_logits(models[config], precisions[config], inputs[config], device)
            if "train" in args.modes:
                steps[config] = make_train_step(models[config], precisions[config], inputs[config], y, device)
        check(rows, logits, precisions)
        for _ in range(args.rounds):
            for row in rows:
                config = row.config
                if "train" in args.modes:
                    ips = time_train(steps[config], args.batch_size, args.steps, args.warmup, device)
                    row.train_ips = max(row.train_ips, ips)
                if "infer" in args.modes:
                    model, precision, xc = models[config], precisions[config], inputs[config]
                    row.infer_ips = max(
                        row.infer_ips, time_infer(model, precision, xc, args.steps, args.warmup, device)
                    )
    return rows


def main(args: argparse.Namespace) -> list[Row]:
    """Measure, print the table and the machine line (and append the JSON record); returns the rows."""
    if args.batch_size < 2 and "train" in args.modes:
        fail("training mode needs --batch_size >= 2 (BatchNorm)")
    if args.co:  # as pytest --co words it: bench/gpu_session.sh's dry run counts the lines
        todo = configs(args)
        print("\n".join(f"{args.model}: {c}" for c in todo) + f"\n{len(todo)} configurations collected")
        return []
    device = pick_device(args.use_gpu)  # once: a --use_gpu=True without CUDA warns once
    rows = run(args, device)
    print(table(args, rows, device))
    print(describe(device))
    if args.json:
        with open(args.json, "a") as f:
            f.write(record(args, rows, device) + "\n")
    return rows


if __name__ == "__main__":
    run_command(main, get_args_parser(), "")

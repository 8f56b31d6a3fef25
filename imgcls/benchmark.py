"""Model throughput: ``python -m imgcls.benchmark --model X [--batch_size B] [--image_size S] [--fused] [--amp]
[--channels_last] [--steps N]``, the source of the speed tables in bench/results/.

For every combination of ``--fused``, ``--amp`` and ``--channels_last`` (a flag left out means both values), one
row: training img/s (forward, backward, SGD step) and inference img/s (eval, no grad) on a fixed random batch, so
the numbers are the model's compute, not the data loader's. Correctness first: each row's eval logits are compared
with the fp32 / NCHW / reference row's on the same weights, and a row beyond its dtype's tolerance stops the run.
Configurations are timed in interleaved rounds (best round kept) so that a machine shared with other work slows
every row alike; speed-ups are ratios to the baseline row of the same run.
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings

import torch

from imgcls.benchmark_report import Config, Row, describe, table
from imgcls.cli.flags import add_bool, fail, pick_device, positive_int
from imgcls.config import PrecisionConfig
from imgcls.engine import Precision, backward_and_step, make_precision, make_scaler
from imgcls.losses import training_loss

# Largest |logit difference| / max |logit| accepted against the fp32 NCHW reference row (fp32: rounding of another
# summation order; bf16 / fp16: 8 / 11 mantissa bits through the whole network).
TOLERANCE = {None: 1e-3, torch.float16: 3e-2, torch.bfloat16: 1e-1}


def get_args_parser() -> argparse.ArgumentParser:
    """Model, batch, image size, the three switches (left out: both values), timing rounds."""
    p = argparse.ArgumentParser("imgcls.benchmark", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="ShuffleNetV2_swish", help="registered model name")
    p.add_argument("--batch_size", type=positive_int, default=32, help="images per step")
    p.add_argument("--image_size", type=positive_int, default=None, help="input side (default: the model's)")
    p.add_argument("--class_dim", type=positive_int, default=1000, help="classifier width")
    for name, help_text in (("fused", "Triton kernels"), ("amp", "autocast"), ("channels_last", "NHWC layout")):
        add_bool(p, name, None, f"{help_text}: True, False, or both when left out")
    p.add_argument("--amp_dtype", default=None, choices=["fp16", "bf16"], help="autocast dtype (fp16 CUDA, bf16 CPU)")
    p.add_argument("--steps", type=positive_int, default=10, help="timed steps per round and mode")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before each round")
    p.add_argument("--rounds", type=positive_int, default=2, help="interleaved rounds; the best is kept")
    p.add_argument("--modes", nargs="+", default=["train", "infer"], choices=["train", "infer"])
    add_bool(p, "use_gpu", None, "CUDA when present (default)")
    return p


def configs(args: argparse.Namespace) -> list[Config]:
    """Every combination the flags allow; the baseline (all False) first when it is among them."""
    values = [[False, True] if v is None else [v] for v in (args.fused, args.amp, args.channels_last)]
    return [Config(*combo) for combo in itertools.product(*values)]


def build(
    args: argparse.Namespace, config: Config, device: torch.device, weights: dict[str, torch.Tensor]
) -> tuple[torch.nn.Module, Precision]:
    """The model in ``config``'s kernels and layout, on the shared ``weights``, and its precision."""
    from imgcls.models import create_model

    model = create_model(args.model, num_classes=args.class_dim, fused=config.fused)
    model.load_state_dict(weights)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    precision = PrecisionConfig(config.amp, args.amp_dtype, config.channels_last)
    return model.to(device), make_precision(precision, device)


def sync(device: torch.device) -> None:
    """Wait for the GPU (timings must cover the work, not just its launch)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_train(
    model: torch.nn.Module,
    precision: Precision,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    warmup: int,
    device: torch.device,
) -> float:
    """Images per second of forward + backward + SGD step."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    scaler = make_scaler(precision, device)
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            start = time.perf_counter()
        with precision.autocast(device):
            out = model(x)
        loss, _ = training_loss(out, y)
        backward_and_step(loss, optimizer, scaler)
    sync(device)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"training loss became {loss.item()}")
    return steps * x.shape[0] / (time.perf_counter() - start)


@torch.no_grad()
def time_infer(
    model: torch.nn.Module, precision: Precision, x: torch.Tensor, steps: int, warmup: int, device: torch.device
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
def eval_logits(model: torch.nn.Module, precision: Precision, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """fp32 eval logits (the correctness gate compares them across configurations)."""
    model.eval()
    with precision.autocast(device):
        return model(x).float()


def check(rows: list[Row], logits: dict[Config, torch.Tensor], precisions: dict[Config, Precision]) -> None:
    """Every row's eval logits against the fp32 / NCHW / reference row (built first, on the same weights)."""
    reference = logits[Config(False, False, False)]
    scale = reference.abs().max().clamp_min(1e-6)
    for row in rows:
        row.logit_error = ((logits[row.config] - reference).abs().max() / scale).item()
        limit = TOLERANCE[precisions[row.config].amp_dtype]
        if row.logit_error > limit:
            raise AssertionError(f"{row.config}: logits differ by {row.logit_error:.2e} (limit {limit:.0e})")


def run(args: argparse.Namespace, device: torch.device) -> list[Row]:
    """Measure every configuration on ``device``; returns the rows (the baseline row first)."""
    from imgcls.models import create_model, get_model_cfg

    size = args.image_size = args.image_size or get_model_cfg(args.model).input_size
    torch.manual_seed(0)
    weights = create_model(args.model, num_classes=args.class_dim).state_dict()
    x = torch.randn(args.batch_size, 3, size, size, device=device)
    y = torch.randint(0, args.class_dim, (args.batch_size,), device=device)
    todo = configs(args)
    base = Config(False, False, False)
    models, precisions, logits = {}, {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fused fallback's one-time warning: reported in the table instead
        for config in [base, *[c for c in todo if c != base]]:
            models[config], precisions[config] = build(args, config, device, weights)
            xc = x.contiguous(memory_format=torch.channels_last) if config.channels_last else x
            logits[config] = eval_logits(models[config], precisions[config], xc, device)
        rows = [Row(c) for c in todo]
        check(rows, logits, precisions)
        for _ in range(args.rounds):
            for row in rows:
                model, precision = models[row.config], precisions[row.config]
                xc = x.contiguous(memory_format=torch.channels_last) if row.config.channels_last else x
                if "train" in args.modes:
                    ips = time_train(model, precision, xc, y, args.steps, args.warmup, device)
                    row.train_ips = max(row.train_ips, ips)
                if "infer" in args.modes:
                    row.infer_ips = max(
                        row.infer_ips, time_infer(model, precision, xc, args.steps, args.warmup, device)
                    )
    return rows


def main(args: argparse.Namespace) -> list[Row]:
    """Measure, print the table and the machine line; returns the rows."""
    if args.batch_size < 2 and "train" in args.modes:
        fail("training mode needs --batch_size >= 2 (BatchNorm)")
    device = pick_device(args.use_gpu)  # once: a --use_gpu=True without CUDA warns once
    rows = run(args, device)
    print(table(args, rows, device))
    print(describe(device))
    return rows


if __name__ == "__main__":
    main(get_args_parser().parse_args())

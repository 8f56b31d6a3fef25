"""Compile every Triton kernel launch of the benchmarks for an H100/H200 (sm_90), on a machine without a GPU.

    .venv/bin/python bench/compile_sm90.py [--quick] [--out bench/results/kernels_sm90_static.md] [--json F]

The ops run on CPU tensors through a Triton driver that targets sm_90 and launches nothing: every launch the GPU
benchmarks make (their layer shapes at batch 256, fp16 / bf16 / fp32, NCHW and channels_last, training forward
and backward, eval) goes through Triton's real NVIDIA compiler and ptxas, with the GPU tile configs
(``kernels._tiles.assume_gpu``). Outputs are garbage (nothing runs): this checks that the kernels compile for the
GPU, and reads each kernel's resources (ptxas -v): registers, spills, shared memory, and the occupancy those
allow on sm_90, and the cross-thread work (shuffles, barriers, shared memory) in each kernel's loop (cuobjdump
-sass). It measures no speed. Exit status 1 when a kernel fails to compile or could not launch (too much
shared memory, or no block fits an SM); spills are listed, as warnings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # bench/ (the benches' shapes) and the repository root (kernels/)

if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("compile_sm90: unset TRITON_INTERPRET: the interpreter compiles nothing")

import triton  # noqa: E402
from triton import knobs  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime import driver  # noqa: E402

# sm_90 limits (CUDA occupancy calculator): per SM.
SM90 = dict(regs=65536, warps=64, blocks=32, shared=233472, shared_per_block=232448, reg_unit=256)
H100_SMS = 132
BATCH = 256
PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


@dataclass
class Compiled:
    kernel: str
    case: str  # the first launch that compiled this specialization
    constexprs: str
    num_warps: int
    regs: int
    spill_bytes: int  # ptxas's stack frame + spill stores: should be 0
    shared_bytes: int
    warps_per_sm: int  # resident warps the registers, shared memory and block limits allow
    # The SASS of the kernel's longest loop (none: zeros): instructions, and the cross-thread traffic in it (warp
    # shuffles, barriers, shared-memory loads and stores). The persistent kernels keep per-lane sums in their tile
    # loop, so those three should be 0 there.
    loop_instructions: int = 0
    loop_shuffles: int = 0
    loop_barriers: int = 0
    loop_shared_ops: int = 0

    @property
    def occupancy(self) -> float:
        return self.warps_per_sm / SM90["warps"]


def warps_per_sm(num_warps: int, regs: int, shared: int) -> int:
    """Resident warps per SM on sm_90 for blocks of ``num_warps`` warps (registers allocated per warp in 256s)."""
    regs_per_warp = -(-regs * 32 // SM90["reg_unit"]) * SM90["reg_unit"]
    blocks = min(SM90["blocks"], SM90["warps"] // num_warps, SM90["regs"] // max(1, regs_per_warp * num_warps))
    if shared:
        blocks = min(blocks, SM90["shared"] // (shared + 1024))  # 1 KiB per block is reserved
    return blocks * num_warps


def ptxas_usage(ptx_path: str) -> dict[str, int]:
    """Registers, stack frame and spill bytes of a PTX file's kernel, from ``ptxas -v`` for sm_90a (the same ptxas
    and target Triton compiled it with)."""
    cmd = [PTXAS, "-v", "--gpu-name=sm_90a", ptx_path, "-o", os.devnull]
    log = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    regs = re.search(r"Used (\d+) registers", log)
    frame = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", log)
    if not regs or not frame:
        raise RuntimeError(f"ptxas -v printed no resource usage:\n{log}")
    stack, stores, loads = (int(v) for v in frame.groups())
    return {"regs": int(regs.group(1)), "stack": stack, "spill_stores": stores, "spill_loads": loads}


def sass_loop(cubin: bytes) -> tuple[int, int, int, int]:
    """(instructions, SHFL, BAR, LDS + STS) inside the cubin's longest loop: the widest span closed by a branch
    back to an earlier address (cuobjdump -sass); zeros when there is no loop."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        sass = subprocess.run([CUOBJDUMP, "-sass", f.name], capture_output=True, text=True, check=True).stdout
    code = [(int(a, 16), op) for a, op in re.findall(r"/\*([0-9a-f]{4,})\*/\s*([^;]*);", sass)]
    loops = [(int(t, 16), a) for a, op in code for t in re.findall(r"\bBRA\s+0x([0-9a-f]+)", op) if int(t, 16) < a]
    if not loops:
        return 0, 0, 0, 0
    start, end = max(loops, key=lambda span: span[1] - span[0])
    body = [op for a, op in code if start <= a <= end]

    def count(pattern: str) -> int:
        return sum(1 for op in body if re.search(pattern, op))

    return len(body), count(r"\bSHFL\b"), count(r"\bBAR\b"), count(r"\b(LDS|STS)\b")


class _CompileOnlyUtils:
    def __init__(self, owner: CompileOnlyDriver) -> None:
        self.owner = owner

    def load_binary(self, name: str, cubin: bytes, shared: int, device: int) -> tuple:
        regs = self.owner.loaded(name, shared, sass_loop(cubin))
        # (module, function, n_regs, n_spills, n_max_threads): a module that is not None marks the kernel loaded
        # (else every launch loads it again); the last is what the registers allow per block
        return "compile-only", None, regs, 0, min(1024, SM90["regs"] // max(1, regs) // 32 * 32)

    def get_device_properties(self, device: int) -> dict[str, int]:
        return {"max_shared_mem": SM90["shared_per_block"], "multiprocessor_count": H100_SMS}


class CompileOnlyDriver:
    """A Triton driver for sm_90 that compiles each new specialization, records its cubin's resources, and
    launches nothing."""

    def __init__(self) -> None:
        self.utils = _CompileOnlyUtils(self)
        self.compiled: list[Compiled] = []
        self.case = ""
        self._pending: tuple[str, int] | None = None
        self._ptx: str | None = None

    def is_active(self) -> bool:
        return True

    def get_current_target(self) -> GPUTarget:
        return GPUTarget("cuda", 90, 32)

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_active_torch_device(self) -> torch.device:
        return torch.device("cpu")

    def map_python_to_cpp_type(self, ty: str) -> str:
        return ty

    def launcher_cls(self, src, metadata) -> Callable[..., None]:
        constants = {k[0] if isinstance(k, tuple) else k: v for k, v in getattr(src, "constants", {}).items()}
        names = getattr(src.fn, "arg_names", [])
        shown = {names[i] if isinstance(i, int) and i < len(names) else i: v for i, v in constants.items()}
        shown = ",".join(f"{k}={v}" for k, v in shown.items() if str(k).isupper())
        self._pending = (shown, metadata.num_warps)
        return lambda *args, **kwargs: None

    def files_of_next_load(self, module, function, name, metadata_group: dict[str, str], hash) -> None:
        """Triton's kernel_load_start_hook: the cache files (the .ptx among them) of the kernel about to load."""
        self._ptx = metadata_group.get(f"{name}.ptx")

    def loaded(self, name: str, shared: int, loop: tuple[int, int, int, int]) -> int:
        """Record the kernel just compiled; -> its register count."""
        constexprs, num_warps = self._pending or ("", 0)
        usage = ptxas_usage(self._ptx)
        occ = warps_per_sm(num_warps, usage["regs"], shared)
        spilled = usage["stack"] + usage["spill_stores"]
        row = Compiled(name, self.case, constexprs, num_warps, usage["regs"], spilled, shared, occ, *loop)
        self.compiled.append(row)
        return usage["regs"]


# --------------------------------------------------------------------------------------------------- the cases


def _tensor(shape: tuple[int, ...], dtype: torch.dtype, layout: str, grad: bool = False) -> torch.Tensor:
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    return torch.empty(shape, dtype=dtype, memory_format=fmt).requires_grad_(grad)


def _dwconv_case(
    model: str, c: int, hw: int, k: int, stride: int, act: str, dt: torch.dtype, layout: str, training: bool
) -> tuple[str, Callable[[], None]]:
    from imgcls.kernels import dwconv_bn_act as op

    def run() -> None:
        x = _tensor((BATCH, c, hw, hw), dt, layout, grad=True)
        w = torch.zeros(c, 1, k, k, dtype=dt, requires_grad=True)
        g, b = torch.ones(c, requires_grad=True), torch.zeros(c, requires_grad=True)
        out = op.dwconv_bn_act(x, w, g, b, torch.zeros(c), torch.ones(c), training=training, stride=stride, act=act)
        out.backward(torch.empty_like(out))

    mode = "train" if training else "eval"
    return f"dwconv {model} c={c} {hw}px k{k} s{stride} {act} {_name(dt)} {layout} {mode}", run


def _shuffle_case(c: int, hw: int, dt: torch.dtype, layout: str) -> tuple[str, Callable[[], None]]:
    from imgcls.kernels import channel_shuffle as op

    def run() -> None:
        x = _tensor((BATCH, 2 * c, hw, hw), dt, layout, grad=True)
        out = op.concat_shuffle(x[:, :c], x[:, c:])  # the unit's split: two views of one tensor, as in ShuffleNetV2
        out.backward(torch.empty_like(out))
        shuffled = op.channel_shuffle(x, 2)
        shuffled.backward(torch.empty_like(shuffled))

    return f"concat_shuffle + channel_shuffle c={c} {hw}px {_name(dt)} {layout}", run


def _se_case(
    c: int, hw: int, r: int, dt: torch.dtype, layout: str, with_residual: bool
) -> tuple[str, Callable[[], None]]:
    from imgcls.kernels import squeeze_excite as op

    def run() -> None:
        x = _tensor((BATCH, c, hw, hw), dt, layout, grad=True)
        params = [torch.zeros(s, dtype=dt, requires_grad=True) for s in ((r, c), (r,), (c, r), (c,))]
        residual = _tensor(x.shape, dt, layout, grad=True) if with_residual else None
        out = op.squeeze_excite(x, *params, residual)
        out.backward(torch.empty_like(out))

    return f"se{'+residual' if with_residual else ''} c={c} {hw}px r={r} {_name(dt)} {layout}", run


def _name(dt: torch.dtype) -> str:
    return {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}[dt]


F16, BF16, F32 = torch.float16, torch.bfloat16, torch.float32
# --quick: every constexpr branch (each activation, kernel size, stride, dtype, layout, train / eval, residual or
# not, the shuffle's both directions) at least once, in few specializations: the CI test's set.
QUICK = [
    *(_dwconv_case("ShuffleNetV2_swish", 58, 28, 3, 1, "identity", F16, "nchw", t) for t in (True, False)),
    *(_dwconv_case("MobileNetV2", 96, 112, 3, 2, "relu6", BF16, "channels_last", t) for t in (True, False)),
    *(_dwconv_case("5x5", 96, 14, 5, 1, "hardswish", F32, "nchw", t) for t in (True, False)),
    *(_dwconv_case("5x5", 96, 28, 5, 2, "relu", F16, "channels_last", t) for t in (True, False)),
    _dwconv_case("swish", 48, 28, 3, 1, "swish", BF16, "nchw", True),
    _shuffle_case(58, 28, F16, "nchw"),
    _shuffle_case(116, 14, BF16, "channels_last"),
    _se_case(256, 56, 16, F16, "nchw", True),
    _se_case(512, 28, 32, BF16, "channels_last", False),
]


def _with_config(layout: str, config: tuple[int, int, int], case: tuple[str, Callable[[], None]]):
    """The case run with dwconv's 3x3 GPU config for ``layout`` swapped to ``config`` (put back afterwards)."""
    from imgcls.kernels import dwconv_bn_act as op

    label, run = case

    def swapped() -> None:
        previous = op.set_gpu_config(3, layout, config)
        try:
            run()
        finally:
            op.set_gpu_config(3, layout, previous)

    return f"{label} config={config}", swapped


def tune_candidate_cases() -> list[tuple[str, Callable[[], None]]]:
    """bench/tune_dwconv.py's sweep: each candidate config at each of its shapes, fp16 training, as it launches."""
    import tune_dwconv

    return [
        _with_config(layout, config, _dwconv_case(*shape, F16, layout, True))
        for layout, config in tune_dwconv.plan()
        for shape in tune_dwconv.shapes()
    ]


def cases(quick: bool) -> list[tuple[str, Callable[[], None]]]:
    """Every launch of bench/bench_{dwconv_bn_act,channel_shuffle,squeeze_excite}.py in fp16, bf16 and fp32, eval
    and SE without the residual too, plus 5x5 and the other activations; or the QUICK set."""
    if quick:
        return QUICK
    import bench_channel_shuffle
    import bench_dwconv_bn_act
    import bench_squeeze_excite

    dw_shapes = [*bench_dwconv_bn_act.SHAPES, ("5x5", 96, 14, 5, 1, "hardswish"), ("5x5", 96, 28, 5, 2, "relu")]
    dw_shapes += [("MobileNetV1", 64, 112, 3, 1, "relu"), ("swish", 48, 28, 3, 1, "swish")]
    grid = [(dt, layout) for dt in (F16, BF16, F32) for layout in ("nchw", "channels_last")]
    found = [_dwconv_case(*shape, dt, layout, t) for shape in dw_shapes for dt, layout in grid for t in (True, False)]
    found += [_shuffle_case(c, hw, dt, layout) for c, hw in bench_channel_shuffle.SHAPES for dt, layout in grid]
    se_shapes = bench_squeeze_excite.SHAPES
    found += [_se_case(*shape, dt, layout, res) for shape in se_shapes for dt, layout in grid for res in (True, False)]
    return found


# ------------------------------------------------------------------------------------------------------ report


def unlaunchable(rows: list[Compiled]) -> list[str]:
    """Kernels that would fail to launch on the GPU: too much shared memory, or no block fits an SM."""
    return [
        f"{row.kernel} [{row.constexprs}] cannot launch ({row.regs} regs, {row.shared_bytes} B shared)"
        for row in rows
        if row.shared_bytes > SM90["shared_per_block"] or row.warps_per_sm == 0
    ]


def spills(rows: list[Compiled]) -> list[str]:
    """Specializations that spill registers (ptxas's stack frame + spill stores), with the launch that made them."""
    return [
        f"{row.kernel} [{row.constexprs}] spills {row.spill_bytes} B ({row.case})" for row in rows if row.spill_bytes
    ]


def summary_table(rows: list[Compiled]) -> list[str]:
    """One line per kernel: specializations, warps, register range, worst occupancy, max shared, spills, and its
    longest loop's largest body (instructions) and most cross-thread operations (SHFL / BAR / LDS+STS)."""
    lines = [
        "| kernel | specializations | warps | registers | min occupancy | max shared (B) | spills "
        "| loop body: instructions | loop: SHFL / BAR / LDS+STS |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name in dict.fromkeys(r.kernel for r in rows):
        mine = [r for r in rows if r.kernel == name]
        regs = sorted({r.regs for r in mine})
        worst = min(mine, key=lambda r: r.occupancy)
        warps = ",".join(str(w) for w in sorted({r.num_warps for r in mine}))
        lines.append(
            f"| `{name}` | {len(mine)} | {warps} | {regs[0]}-{regs[-1]} | {worst.occupancy:.0%} "
            f"({worst.regs} regs) | {max(r.shared_bytes for r in mine)} | {sum(r.spill_bytes > 0 for r in mine)} "
            f"| {max(r.loop_instructions for r in mine)} | {max(r.loop_shuffles for r in mine)} / "
            f"{max(r.loop_barriers for r in mine)} / {max(r.loop_shared_ops for r in mine)} |"
        )
    return lines


def _cpu_name() -> str:
    """The CPU's model name (Linux), else the architecture."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def markdown(rows: list[Compiled], launches: int, seconds: float, command: str) -> str:
    from imgcls.kernels import _reductions, channel_shuffle, dwconv_bn_act, squeeze_excite

    configs = {
        "dwconv_bn_act": (
            dwconv_bn_act._GPU_CONFIGS,
            f"reduce {_reductions._GPU_REDUCE}, waves {_reductions._GPU_WAVES}",
        ),
        "channel_shuffle": (channel_shuffle._GPU_CONFIGS, ""),
        "squeeze_excite": (squeeze_excite._GPU_CONFIGS, f"FC block {squeeze_excite._FC_BLOCK_C}"),
    }
    cannot, spilled = unlaunchable(rows), spills(rows)
    out = [
        "# Kernels compiled for sm_90 (H100 / H200), without a GPU: resources, not speed",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {_cpu_name()}, no GPU; Python {platform.python_version()}, "
        f"torch {torch.__version__}, triton {triton.__version__}; {time.strftime('%Y-%m-%d')}.",
        "",
        f"{launches} launch groups (ops at the benchmarks' layer shapes, batch {BATCH}) compiled {len(rows)} kernel "
        f"specializations in {seconds:.0f} s through Triton's NVIDIA backend and ptxas (target cuda 90, "
        "the GPU tile configs); registers and spills from `ptxas -v` of each PTX (sm_90a). Occupancy = resident "
        "warps per SM / 64 that the registers, shared memory and block limits allow. The loop columns read each "
        "kernel's longest loop in its SASS (`cuobjdump -sass`): its length and the warp shuffles, barriers and "
        "shared-memory loads + stores inside it. Nothing ran: no timing here.",
        "",
        "GPU tile configs (BLOCK_C, BLOCK_P, num_warps) per layout:",
        "",
    ]
    out += [f"- `{op}`: {cfg}{'; ' + extra if extra else ''}" for op, (cfg, extra) in configs.items()]
    out += ["", *summary_table(rows), ""]
    out += [f"Cannot launch: {len(cannot)}" + (":" if cannot else "."), *(f"- {c}" for c in cannot), ""]
    out += [f"Spills: {len(spilled)}" + (":" if spilled else "."), *(f"- {s}" for s in spilled), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--quick", action="store_true", help="every constexpr branch once (the CI test's set)")
    choice.add_argument(
        "--tune-candidates", action="store_true", help="bench/tune_dwconv.py's candidate configs at its shapes"
    )
    parser.add_argument("--out", help="write the markdown table here (else stdout)")
    parser.add_argument("--json", help="write every compiled specialization here")
    args = parser.parse_args(argv)

    from imgcls.kernels._tiles import assume_gpu

    fake = CompileOnlyDriver()
    driver.set_active(fake)
    knobs.runtime.kernel_load_start_hook = fake.files_of_next_load
    started = time.perf_counter()
    failures, launches = [], 0
    with assume_gpu(H100_SMS):
        for label, run in tune_candidate_cases() if args.tune_candidates else cases(args.quick):
            fake.case, launches = label, launches + 1
            before = len(fake.compiled)
            try:
                run()
            except Exception as error:  # noqa: BLE001  (report every failing launch, then fail)
                failures.append(f"{label}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
            print(f"[{time.perf_counter() - started:6.1f}s] {label}: {len(fake.compiled) - before} new", flush=True)
    seconds = time.perf_counter() - started
    command = " ".join(["python bench/compile_sm90.py", *(sys.argv[1:] if argv is None else argv)])
    text = markdown(fake.compiled, launches, seconds, command)
    if failures:
        text += "\nFailed to compile:\n" + "\n".join(f"- {f}" for f in failures) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"compiled": [asdict(r) for r in fake.compiled], "failures": failures}, f, indent=1)
    return 1 if failures or unlaunchable(fake.compiled) else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# Issue 5's GPU check in ONE device call (~10 minutes of wall time): versions, the kernel tests on the real GPU,
# the kernel benches, the ShuffleNetV2_swish training step, and the table of where each goal stands.
#
#   device tool:  run(command="bash bench/gpu_session.sh", timeout_s=600)
#                 (with carry=[".whl"] and the wheels of bench/gpu_wheels.txt, only if pytest-benchmark is missing)
#   dry run here: GPU_SESSION_DRY=1 PYTHON=.venv/bin/python bash bench/gpu_session.sh
#                 (every stage collect-only; each stage's selected case count is checked against EXPECT below)
#
# Everything lands in $OUT (at most 8 files come back): log.txt, env.json, dwconv.json, shuffle_se.json, step.json,
# step_compile.json, extras.json, kernels_<gpu>.md. Each stage has its own `timeout`; pytest gets SIGINT first, and
# pytest-benchmark then still writes the JSON of the cases that finished, so a slow stage loses only its own tail.
#
# Budget (GPU_SESSION_BUDGET_S, default 580 s; the device call also spends ~1-2 min starting the machine). Per
# case: torch.compile of the reference, compiled afresh per case, ~4-8 s (the first one in a process ~20-30 s);
# do_bench ~0.2 s x 2 phases x 3 variants; pytest-benchmark's own timing is held to ~0.05 s. The whole 100 kernel
# cases (~12-15 min) and 24 training-step cases (each compile case ~1-2 min) do not fit, so the core stages take
# what issue 5's goals need, in this order, each with a fixed cap:
#   tests     tests/kernels (~104 on a GPU: the CPU's 92 + bf16 cases), real kernels, 8 xdist workers cap 100 s
#   dwconv    dwconv+BN+act training, every stride-1 shape, fp16, NCHW + channels_last (16 cases)  cap 140 s
#   shuffle_se concat+shuffle and SE+residual, every shape, fp16, both layouts (6 + 8 cases)       cap  90 s
#   step      ShuffleNetV2_swish b256 224px fp16 channels_last training step: eager, fused (2)     cap  75 s
#   step_compile  the same with torch.compile (1; run last of the step cases so a slow compile costs only itself)
#                                                                                                   cap 105 s
#   tune      bench/tune_dwconv.py: 3x3 tile configs swept at 5 stride-1 shapes, fp16, layouts in turn (its
#             table goes to log.txt, no file of its own: at most 8 files come back)                 cap  75 s
# then `extras` gets whatever time is left, in this order: bf16 concat+shuffle and SE (14), dwconv bf16 and fp16
# stride 2 (32, shape by shape), dwconv eval (24), MobileNetV2 training step eager + fused (2) = 72 cases; the rest of the 24
# training-step cases (bf16, NCHW, compile of MobileNetV2) are left for another session.
set -u -o pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
DRY=${GPU_SESSION_DRY:-0}
OUT=${OUT:-/tmp/gpu_session_out}
BUDGET=${GPU_SESSION_BUDGET_S:-580}
mkdir -p "$OUT"
WORK=$(mktemp -d)
LOG=$OUT/log.txt
NOTES=$WORK/notes.txt
: >"$LOG"
: >"$NOTES"
START=$(date +%s)
DEADLINE=$((START + BUDGET))
TABLE_RESERVE=15
MISMATCH=0
COMMANDS=("bash bench/gpu_session.sh   # GPU_SESSION_BUDGET_S=$BUDGET")
# One cache for every stage: the benches reuse the kernels the tests compiled; the tests' cubins prove real kernels.
export TRITON_CACHE_DIR=$WORK/triton TORCHINDUCTOR_CACHE_DIR=$WORK/inductor
unset TRITON_INTERPRET

log() { echo "[$(date -u +%H:%M:%S) +$(($(date +%s) - START))s] $*" | tee -a "$LOG"; }

# stage NAME CAP EXPECT CMD...: run CMD under min(CAP, time left before the table) seconds; EXPECT is the number of
# cases the stage selects (checked in the dry run, where CMD runs collect-only).
stage() {
    local name=$1 cap=$2 expect=$3 t rc began
    shift 3
    t=$((DEADLINE - $(date +%s) - TABLE_RESERVE))
    ((t > cap)) && t=$cap
    if ((t < 20)); then
        log "stage $name: skipped, budget spent"
        echo "stage $name: skipped (budget spent)" >>"$NOTES"
        return
    fi
    began=$(date +%s)
    if [[ $DRY == 1 ]]; then
        log "stage $name (dry, collect only): $*"
        local got
        got=$("$@" --co 2>&1 | tee -a "$LOG" | grep -oE '^[0-9]+(/[0-9]+)? tests? collected' | grep -oE '^[0-9]+')
        if [[ $expect != - && $got != "$expect" ]]; then
            log "stage $name: MISMATCH: selects ${got:-?} cases, expected $expect"
            MISMATCH=1
        fi
        echo "stage $name: dry run, selects ${got:-?} cases (expected $expect)" >>"$NOTES"
        return
    fi
    log "stage $name (timeout ${t}s): $*"
    COMMANDS+=("timeout --foreground -s INT -k 20 $t $*")
    # SIGINT to pytest alone (--foreground): KeyboardInterrupt ends the session and the JSON is still written;
    # sent to the whole group it would also kill inductor's compile workers, and the error that raises in pytest
    # would only fail the current case and let the next one run into the KILL, losing the JSON.
    timeout --foreground -s INT -k 20 "$t" "$@" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    local what="rc $rc"
    ((rc == 124 || rc == 137)) && what="timed out at ${t}s (rc $rc): the cases that finished are kept"
    log "stage $name: $what, $(($(date +%s) - began)) s"
    echo "stage $name (${expect} cases selected): $what after $(($(date +%s) - began)) s" >>"$NOTES"
}

log "gpu_session: dry=$DRY budget=${BUDGET}s out=$OUT python=$PY"
if compgen -G ".whl/*.whl" >/dev/null; then  # carried wheels (bench/gpu_wheels.txt)
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        2>&1 | tee -a "$LOG" && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! $PY -c "import pytest_benchmark" 2>>"$LOG"; then
    log "pytest-benchmark is missing: carry it as wheels (bench/gpu_wheels.txt says which and how), then rerun"
    exit 3
fi
if [[ $DRY != 1 ]]; then
    nvidia-smi 2>&1 | tee -a "$LOG"
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv 2>&1 |
        tee -a "$LOG"
    if ! $PY -c "import torch; assert torch.cuda.is_available()" 2>>"$LOG"; then
        log "torch sees no CUDA GPU: the kernel tests would run in the interpreter and the benches would skip; stop"
        exit 2
    fi
fi
$PY bench/make_kernel_table.py --write-env "$OUT/env.json" 2>&1 | tee -a "$LOG"
cat "$OUT/env.json" | tee -a "$LOG"
$PY -m pip list 2>/dev/null | grep -iE '^(torch|triton|pytest|pytest-benchmark|pytest-xdist|numpy) ' | tee -a "$LOG"
SLUG=$($PY -c 'import json, sys; print(json.load(open(sys.argv[1]))["slug"])' "$OUT/env.json")

XDIST=()  # the tests compile many small kernels: spread the compiles over processes where xdist is there
if [[ $DRY != 1 ]] && $PY -c "import xdist" 2>/dev/null; then XDIST=(-n 8); fi
TESTS_EXPECT=-  # the GPU adds bf16 cases that a CPU collection does not list
stage tests 100 "$TESTS_EXPECT" $PY -m pytest tests/kernels -q -x -p no:cacheprovider --durations=15 "${XDIST[@]}"
if [[ $DRY != 1 ]]; then
    log "cubins compiled by Triton for this GPU: $(find "$TRITON_CACHE_DIR" -name '*.cubin' 2>/dev/null | wc -l)"
fi

BENCH=($PY -m pytest -q -s -p no:cacheprovider --benchmark-only --benchmark-min-rounds=3 --benchmark-max-time=0.05
    --benchmark-warmup=off --benchmark-columns=min,mean,rounds)
stage dwconv 140 16 "${BENCH[@]}" --benchmark-json="$OUT/dwconv.json" bench/bench_dwconv_bn_act.py \
    -k "not eval and fp16 and -3-1-"
stage shuffle_se 90 14 "${BENCH[@]}" --benchmark-json="$OUT/shuffle_se.json" bench/bench_channel_shuffle.py \
    bench/bench_squeeze_excite.py -k "fp16"
STEP="test_train_step_gpu and ShuffleNetV2_swish and fp16 and channels_last"
stage step 75 2 "${BENCH[@]}" --benchmark-json="$OUT/step.json" bench/bench_models.py -k "$STEP and not compile"
stage step_compile 105 1 "${BENCH[@]}" --benchmark-json="$OUT/step_compile.json" bench/bench_models.py \
    -k "$STEP and compile"
stage tune 75 60 $PY bench/tune_dwconv.py --budget-s 50
EXTRAS="(not test_train_step and not test_inference and (bf16 or eval or -3-2-))"
EXTRAS+=" or (test_train_step_gpu and MobileNetV2 and fp16 and channels_last and not compile)"
stage extras 100000 72 "${BENCH[@]}" --benchmark-json="$OUT/extras.json" bench/bench_channel_shuffle.py \
    bench/bench_squeeze_excite.py bench/bench_dwconv_bn_act.py bench/bench_models.py -k "$EXTRAS"

TABLE=$OUT/kernels_$SLUG.md
CMD_ARGS=()
for c in "${COMMANDS[@]}"; do CMD_ARGS+=(--command "$c"); done
log "table -> $TABLE"
$PY bench/make_kernel_table.py "$OUT"/{dwconv,shuffle_se,step,step_compile,extras}.json --env "$OUT/env.json" \
    --notes "$NOTES" "${CMD_ARGS[@]}" --out "$TABLE" 2>&1 | tee -a "$LOG"
# The reply carries the end of the output: finish with the notes and the goals.
cat "$NOTES"
sed -n '/^## Goals/,/^## dwconv/p' "$TABLE" | head -n 20
log "gpu_session: done in $(($(date +%s) - START)) s"
rm -rf "$WORK"
exit $MISMATCH

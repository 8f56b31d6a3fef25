#!/usr/bin/env bash
# The whole GPU check in ONE device call: the goal stages first, then the model throughput table, the reader's
# feeding rate, the kernel tests on the GPU, the tile sweep and extra cases while time is left.
#
#   device tool:  run(command="bash bench/gpu_session.sh", timeout_s=600)
#                 (carry=[".whl"] with the wheels of bench/gpu_wheels.txt only if pytest-benchmark is missing there)
#   dry run here: GPU_SESSION_DRY=1 PYTHON=.venv/bin/python bash bench/gpu_session.sh
#                 (every stage collect-only, its case count checked against the EXPECT given below; CI runs this,
#                 tests/test_gpu_session.py)
#
# $OUT gets at most 8 files (all the device tool brings back), each written as soon as its stage ends, so a stage or
# a whole call cut off keeps what finished: log.txt (everything printed, as it goes), env.json, dwconv.json,
# shuffle_se.json, throughput.jsonl (one line per python -m imgcls.benchmark run), reader.json, extras.json and
# kernels_<gpu>.md (bench/make_kernel_table.py: goals, per-case tables, throughput beside the reader's rate; remade
# after every stage). Each stage runs under its own `timeout`; pytest gets SIGINT, and pytest-benchmark then still
# writes the JSON of the cases that finished.
#
# Budget: GPU_SESSION_BUDGET_S, default 530 s of the call's 600 (the lease's ~15 minutes also pay the machine's
# start). Stage caps, in order (a stage gets min(cap, time left)):
#   dwconv        goal: dwconv+BN+act training fwd+bwd, every stride-1 shape, fp16, both layouts (16 cases)  100 s
#   shuffle_se    goal: concat+shuffle and SE+residual, every shape, fp16, both layouts (6 + 8 cases)         50 s
#   step          goal: ShuffleNetV2_swish training step, b256 224 px fp16 channels_last, eager + fused        50 s
#   step_compile  goal: the same run with its torch.compile row (eager, fused, compile; the compile costs)     90 s
#   throughput    MobileNetV2, then SE_ResNeXt50_32x4d: eager / fused / compile, fp16 channels_last       2 x 80 s
#   reader        the native reader's training batches with 16 threads, on a corpus made on the spot          40 s
#                 (built with setup.py build_ext in the background from the start; without libjpeg-turbo or
#                 cmake there it is skipped with a note and the other stages run)
#   tests         pytest tests/kernels on the GPU: real kernels, every dtype and layout (xdist when present)   60 s
#   tune          bench/tune_dwconv.py: 3x3 tile configs at 5 stride-1 shapes (its table goes to log.txt)     40 s
#   extras        whatever is left: bf16 shuffle/SE and dwconv, stride 2, eval
# The costs that set these caps (estimates: nothing has run on this GPU yet): a kernel case compiles the reference
# afresh (~4-8 s, the first in a process ~20-30 s); a model run compiles the fused kernels it meets (~1 s each,
# cached across stages) and with --compile an eval and a training graph (~30-70 s); the timed steps take seconds.
# The caps add up to more than the budget on purpose: the goal stages keep theirs, the last stages get what is left.
set -u -o pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
DRY=${GPU_SESSION_DRY:-0}
OUT=${OUT:-/tmp/gpu_session_out}
BUDGET=${GPU_SESSION_BUDGET_S:-530}
THREADS=${GPU_SESSION_READER_THREADS:-16}
mkdir -p "$OUT"
WORK=$(mktemp -d)
LOG=$OUT/log.txt
NOTES=$WORK/notes.txt
: >"$LOG"
: >"$NOTES"
START=$(date +%s)
DEADLINE=$((START + BUDGET))
MISMATCH=0
COMMANDS=("bash bench/gpu_session.sh   # GPU_SESSION_BUDGET_S=$BUDGET")
# One cache for every stage: the benches reuse the kernels the tests compiled.
export TRITON_CACHE_DIR=$WORK/triton TORCHINDUCTOR_CACHE_DIR=$WORK/inductor IMGCLS_CACHE=$WORK/cache
unset TRITON_INTERPRET

log() { echo "[$(date -u +%H:%M:%S) +$(($(date +%s) - START))s] $*" | tee -a "$LOG"; }
note() { echo "$*" >>"$NOTES"; }

# stage NAME CAP EXPECT CMD...: run CMD under min(CAP, time left) seconds, then remake the table. EXPECT is the number
# of cases CMD selects ('+': at least one), checked in the dry run, where CMD runs with --co (pytest's collect-only;
# the repository's non-pytest tools here take --co too and print their count the same way).
stage() {
    local name=$1 cap=$2 expect=$3 t rc began
    shift 3
    t=$((DEADLINE - $(date +%s)))
    ((t > cap)) && t=$cap
    if ((t < 15)); then
        log "stage $name: skipped, budget spent"
        note "stage $name: skipped (budget spent)"
        return
    fi
    began=$(date +%s)
    if [[ $DRY == 1 ]]; then
        log "stage $name (dry, collect only): $*"
        local got
        got=$("$@" --co 2>&1 | tee -a "$LOG" | grep -oE '^[0-9]+(/[0-9]+)? (tests?|configurations?) collected' |
            grep -oE '^[0-9]+')
        if [[ -z $got || ($expect != + && $got != "$expect") ]]; then
            log "stage $name: MISMATCH: selects ${got:-?} cases, expected $expect"
            MISMATCH=1
        fi
        note "stage $name: dry run, selects ${got:-?} cases (expected $expect)"
        return
    fi
    log "stage $name (timeout ${t}s): $*"
    COMMANDS+=("timeout --foreground -s INT -k 20 $t $*")
    # SIGINT to the command alone (--foreground): pytest stops its run and still writes its JSON; sent to the
    # whole group it would also kill inductor's compile workers and lose the JSON.
    timeout --foreground -s INT -k 20 "$t" "$@" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    local what="rc $rc"
    ((rc == 124 || rc == 137)) && what="timed out at ${t}s (rc $rc): the cases that finished are kept"
    log "stage $name: $what, $(($(date +%s) - began)) s"
    note "stage $name: $what after $(($(date +%s) - began)) s"
    table
}

# The table of everything so far: remade after each stage, so a call cut off still brings one back.
table() {
    local args=()
    for c in "${COMMANDS[@]}"; do args+=(--command "$c"); done
    $PY bench/make_kernel_table.py "$OUT"/{dwconv,shuffle_se,extras}.json --throughput "$OUT/throughput.jsonl" \
        --reader "$OUT/reader.json" --env "$OUT/env.json" --notes "$NOTES" "${args[@]}" --out "$TABLE" >>"$LOG" 2>&1 ||
        log "make_kernel_table failed (see above); the JSON files are intact"
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
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # imgcls, bench and tests (the JPEG corpus) from this checkout
if [[ $DRY != 1 ]]; then
    # This copy of the tree is not pip-installed: imgcls.kernels is the top-level kernels/ (setup.py's package_dir).
    $PY -c "import imgcls.kernels" 2>/dev/null || ln -sfn ../kernels imgcls/kernels
    if ! $PY -c "import torch; assert torch.cuda.is_available()" 2>>"$LOG"; then
        log "torch sees no CUDA GPU: the kernel tests would run in the interpreter and the benches would skip; stop"
        exit 2
    fi
    # The native reader builds on the CPUs while the GPU stages run (the reader stage waits for it).
    (nice -n 10 $PY setup.py build_ext >"$WORK/build.log" 2>&1; echo $? >"$WORK/build.rc") &
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv 2>&1 |
        tee -a "$LOG"
fi
$PY bench/make_kernel_table.py --write-env "$OUT/env.json" 2>&1 | tee -a "$LOG"
tee -a "$LOG" <"$OUT/env.json"
$PY -m pip list 2>/dev/null | grep -iE '^(torch|triton|pytest|pytest-benchmark|pytest-xdist|numpy|cmake) ' | tee -a "$LOG"
SLUG=$($PY -c 'import json, sys; print(json.load(open(sys.argv[1]))["slug"])' "$OUT/env.json")
TABLE=$OUT/kernels_$SLUG.md

# ---- goal stages
BENCH=($PY -m pytest -q -s -p no:cacheprovider --benchmark-only --benchmark-min-rounds=3 --benchmark-max-time=0.05
    --benchmark-warmup=off --benchmark-columns=min,mean,rounds)
stage dwconv 100 16 "${BENCH[@]}" --benchmark-json="$OUT/dwconv.json" bench/bench_dwconv_bn_act.py \
    -k "not eval and fp16 and -3-1-"
stage shuffle_se 50 14 "${BENCH[@]}" --benchmark-json="$OUT/shuffle_se.json" bench/bench_channel_shuffle.py \
    bench/bench_squeeze_excite.py -k "fp16"
MODEL=($PY -m imgcls.benchmark --batch_size 256 --amp=True --amp_dtype fp16 --channels_last=True --steps 10
    --rounds 2 --json "$OUT/throughput.jsonl")
# The plain run first: if the compile run is cut off, the fused vs eager goal is still measured.
stage step 50 2 "${MODEL[@]}" --model ShuffleNetV2_swish --modes train
stage step_compile 90 3 "${MODEL[@]}" --model ShuffleNetV2_swish --compile

# ---- the throughput table of the other models, and what feeds them
stage throughput_mobilenet 80 3 "${MODEL[@]}" --model MobileNetV2 --compile
stage throughput_se_resnext 80 3 "${MODEL[@]}" --model SE_ResNeXt50_32x4d --compile
READER=($PY bench/bench_reader.py --feed-rate --threads "$THREADS" --per-kind 8 --rounds 5 --json "$OUT/reader.json")
READER_BUILT=1
if [[ $DRY != 1 ]]; then
    log "waiting for the native reader's build (at most until a minute before the deadline)"
    while [[ ! -e $WORK/build.rc ]] && (($(date +%s) < DEADLINE - 60)); do sleep 2; done
    if [[ $(cat "$WORK/build.rc" 2>/dev/null) != 0 ]] || ! $PY -c "import imgcls._reader" 2>>"$LOG"; then
        READER_BUILT=0
        tee -a "$LOG" <"$WORK/build.log"
        log "stage reader: skipped: the native reader did not build here (build log above; it needs cmake, pybind11 " \
            "and libjpeg-turbo through pkg-config)"
        note "stage reader: skipped: the native reader did not build on this machine (see log.txt)"
    fi
fi
((READER_BUILT)) && stage reader 40 1 "${READER[@]}"

# ---- the rest, while time is left
XDIST=()  # the tests compile many small kernels: spread the compiles over processes where xdist is there
if [[ $DRY != 1 ]] && $PY -c "import xdist" 2>/dev/null; then XDIST=(-n 8); fi
KERNEL_TESTS=(tests/kernels -q -p no:cacheprovider --durations=15)
stage tests 60 + $PY -m pytest "${KERNEL_TESTS[@]}" "${XDIST[@]}"  # a GPU adds bf16 cases: no fixed count
stage tune 40 60 $PY bench/tune_dwconv.py --budget-s 25
EXTRAS="bf16 or eval or -3-2-"
stage extras 100000 70 "${BENCH[@]}" --benchmark-json="$OUT/extras.json" bench/bench_channel_shuffle.py \
    bench/bench_squeeze_excite.py bench/bench_dwconv_bn_act.py -k "$EXTRAS"

table
# The reply carries the end of the output: finish with the notes and the goals.
cat "$NOTES"
sed -n '/^## Goals/,/^## dwconv/p' "$TABLE" 2>/dev/null | head -n 20
log "gpu_session: done in $(($(date +%s) - START)) s"
rm -rf "$WORK"
exit $MISMATCH

#!/usr/bin/env bash
# Builds the fuzz targets with AddressSanitizer + UBSan and runs each for a bounded time: the JPEG decode
# (fuzz_decode, SECONDS) and the tar shard split (fuzz_tar, a quarter of that, at least 5 s).
# Usage: csrc/fuzz/run_fuzz.sh [SECONDS=60] [BUILD_DIR=build/fuzz]. tests/reader/test_fuzz_asan.py
# (marked slow) runs it for 20 s. Seeds come from tests/jpeg_corpus.py (every JPEG flavour the reader supports) and
# tests/tar_corpus.py. libFuzzer when CXX is clang++, the mutation driver otherwise.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
build=$(realpath -m "${2:-build/fuzz}")  # absolute: CMake is given paths inside it
python=${PYTHON:-$PWD/.venv/bin/python}
seeds="$build/seeds"
cmake -S . -B "$build" -DIMGCLS_ASAN=ON -DIMGCLS_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DIMGCLS_OUTPUT_DIR="$build/module" -DPython_EXECUTABLE="$python" >/dev/null
cmake --build "$build" --target fuzz_decode fuzz_tar --parallel "$(nproc)" >/dev/null
"$python" -m tests.jpeg_corpus "$seeds"
"$python" -m tests.tar_corpus "$build/tar_seeds"
tar_seconds=$(( seconds / 4 > 5 ? seconds / 4 : 5 ))
mkdir -p "$build/corpus" "$build/tar_corpus"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
if "$build/fuzz_decode" -help=1 >/dev/null 2>&1; then
  "$build/fuzz_decode" -max_total_time="$seconds" -rss_limit_mb=1024 "$build/corpus" "$seeds"
  "$build/fuzz_tar" -max_total_time="$tar_seconds" -rss_limit_mb=1024 "$build/tar_corpus" "$build/tar_seeds"
else
  "$build/fuzz_decode" "$seeds" "$seconds"
  "$build/fuzz_tar" "$build/tar_seeds" "$tar_seconds"
fi

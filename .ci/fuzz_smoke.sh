#!/usr/bin/env bash
# The fuzz smoke of CI: csrc/fuzz/run_fuzz.sh (AddressSanitizer + UBSan builds of the decode entry and the tar
# shard split, mutated seeds of every JPEG flavour and tar format) for a bounded time, default 20 s. Skipped, with
# the reason in the log, only where the tools or the sanitizer runtime are missing (a probe program is built and run
# with the same flags first); any other failure, a sanitizer report included, fails CI.
# Usage: .ci/fuzz_smoke.sh [SECONDS=20] [BUILD_DIR=build/fuzz]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
build=${2:-build/fuzz}
cxx=${CXX:-c++}

skip() {
  echo "fuzz smoke: SKIPPED: $1"
  exit 0
}

for tool in cmake "$cxx" pkg-config; do
  command -v "$tool" >/dev/null || skip "$tool is not installed"
done
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf 'int main() { return 0; }\n' >"$probe/probe.cpp"
"$cxx" -fsanitize=address,undefined "$probe/probe.cpp" -o "$probe/probe" >"$probe/log" 2>&1 ||
  skip "the compiler cannot link -fsanitize=address,undefined (no ASan/UBSan runtime): $(head -c 300 "$probe/log")"
"$probe/probe" >"$probe/log" 2>&1 || skip "an ASan/UBSan program does not run here: $(head -c 300 "$probe/log")"

echo "fuzz smoke: ASan + UBSan fuzzing of the decode (${seconds} s) and the tar split (build in $build)"
start=$SECONDS
bash csrc/fuzz/run_fuzz.sh "$seconds" "$build"
echo "fuzz smoke: passed in $((SECONDS - start)) s"

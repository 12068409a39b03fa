#!/usr/bin/env bash
# sanitize.sh — the whole CPU test suite under AddressSanitizer + UndefinedBehaviorSanitizer
# (any report fails the test that caused it), then the decoder tests under ThreadSanitizer
# (scripts/tsan.sh). Builds in build-asan/ (GCC, CUDA off); the last result and its time are in
# docs/reliability.md. Too slow for CI on 2 cores (a second full build, and the suite runs
# several times slower): run it before a release or after touching memory-handling code.
#   bash scripts/sanitize.sh [CTEST_ARGS...]      e.g. bash scripts/sanitize.sh -R Safetensors
# Do not edit the tree while it builds: a header changed between two objects' compilations
# gives them different layouts of one struct, which UBSan then reports (a false finding).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
cmake -S . -B build-asan -G Ninja -DSF_ENABLE_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSF_SANITIZE=address,undefined -DCMAKE_CXX_FLAGS="-fno-sanitize-recover=undefined" > /dev/null
start=$(date +%s)
cmake --build build-asan -j"$jobs"
built=$(date +%s)
# detect_leaks: the tests free what they allocate; OpenBLAS's and OpenMP's thread pools are
# process-lifetime and not reported as leaks. halt_on_error: the first report fails the test.
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
ctest --test-dir build-asan -LE gpu -j"$jobs" --output-on-failure "$@"
tested=$(date +%s)
bash scripts/tsan.sh
echo "sanitize.sh: build $((built - start)) s, ASan+UBSan suite $((tested - built)) s, TSan decoder tests $(( $(date +%s) - tested )) s: clean"

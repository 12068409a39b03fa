#!/usr/bin/env bash
# Builds the decoder tests with ThreadSanitizer and runs them: the concurrent (staggered)
# decode schedule must show no data race. See docs/decoding.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-tsan -G Ninja -DSF_ENABLE_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSF_SANITIZE=thread > /dev/null
cmake --build build-tsan --target decoder_test
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" ./build-tsan/decoder_test

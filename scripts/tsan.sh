#!/usr/bin/env bash
# Builds the decoder tests and the serving tests with ThreadSanitizer and runs them: decoding
# must show no data race (the decoder has no threads of its own since the one-pass renovation;
# its kernels' OpenMP regions stay below their thresholds on the tests' tiny models; see
# docs/decoding.md), nor must the server (the engine's thread, HTTP connection threads, the
# event channels between them; docs/serving.md).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-tsan -G Ninja -DSF_ENABLE_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSF_SANITIZE=thread > /dev/null
cmake --build build-tsan --target decoder_test serve_engine_test serve_http_test
for t in decoder_test serve_engine_test serve_http_test; do
  TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" "./build-tsan/$t"
done

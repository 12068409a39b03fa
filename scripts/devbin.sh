#!/usr/bin/env bash
# Packs what a GPU machine without our build dependencies needs into .devbin/ (git-ignored):
# the stagformer binary, the GPU test binaries, and the shared libraries they use that a bare
# CUDA image lacks (fmt, OpenBLAS, PCRE2, GoogleTest's runtime, the GCC runtime). The CUDA
# libraries (cudart, cuBLASLt, NCCL) are taken from the GPU machine's own CUDA install.
# Used with the workplace's device runner: carry .devbin, then `bash bench/gpu_run.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
#   bash scripts/devbin.sh [BUILD_DIR [EXECUTABLE...]]
# (default: the stagformer tool and every GPU test)
build=${1:-build}
shift || true
executables=${*:-stagformer cuda_kernels_test cuda_attention_test cuda_model_test cuda_decode_test cuda_data_parallel_test twin_test}
rm -rf .devbin
mkdir -p .devbin/lib
for exe in $executables; do
  if [[ -x "$build/$exe" ]]; then
    strip -o ".devbin/$exe" "$build/$exe"
  fi
done
# The kernel tracer (bench/kernel_trace/), loaded by the CUDA driver through CUDA_INJECTION64_PATH.
[[ -f "$build/libsf_kernel_trace.so" ]] && strip -o .devbin/lib/libsf_kernel_trace.so "$build/libsf_kernel_trace.so"
for exe in .devbin/*; do
  [[ -f "$exe" ]] || continue
  ldd "$exe" | awk '/=> \//{print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*) ;;     # the system's own
      libcuda.so*|libcudart.so*|libcublas*|libnccl.so*|libnvidia*|libcupti*) ;;  # the GPU machine's CUDA
      *) cp -Lu "$lib" .devbin/lib/ ;;
    esac
  done
done
# Which code the binaries are: the GPU machine's copy of .git may lag behind the tree it receives.
{ git rev-parse --short HEAD; git status --short --untracked-files=no | sed 's/^/changed: /'; } \
  > .devbin/built-from.txt 2>/dev/null || true
# Large libraries travel compressed (the carry limit); bench/gpu_env.sh unpacks them.
find .devbin/lib -type f -size +8M -exec gzip -9 {} \;
du -sh .devbin

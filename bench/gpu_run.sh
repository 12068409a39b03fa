#!/usr/bin/env bash
# GPU checks and training benchmarks in one go, for a GPU machine that has the CUDA toolkit and
# PyTorch but not our build dependencies: run from the repository root after
# `bash scripts/devbin.sh` packed .devbin/ (carried to the machine). Writes logs under
# ${OUT:-gpu-out}/ and prints a summary last.
#   bash bench/gpu_run.sh [tests] [bench] [twin]     (default: all three)
set -uo pipefail
out=${OUT:-gpu-out}
mkdir -p "$out"
what=${*:-tests bench twin}
cuda_libs=$(ls -d /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib 2>/dev/null | tr '\n' ':')
py_nvidia=$(python3 -c 'import nvidia, os; print(":".join(os.path.join(p, d, "lib") for p in nvidia.__path__ for d in os.listdir(p)))' 2>/dev/null || true)
export LD_LIBRARY_PATH="$PWD/.devbin/lib:${cuda_libs}${py_nvidia}:${LD_LIBRARY_PATH:-}"
export NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
git rev-parse --short HEAD 2>/dev/null | tee "$out/commit.txt" || true
summary=()

if [[ $what == *tests* ]]; then
  for t in cuda_kernels_test cuda_attention_test cuda_model_test twin_test; do
    [[ -x .devbin/$t ]] || { summary+=("$t: not built"); continue; }
    ./.devbin/$t --gtest_brief=1 > "$out/$t.log" 2>&1
    rc=$?
    summary+=("$t: exit $rc, $(grep -c '^\[  FAILED' "$out/$t.log") failed lines")
    { echo "=== $t (exit $rc)"; cat "$out/$t.log"; } >> "$out/tests.log"
    rm -f "$out/$t.log"
  done
fi

if [[ $what == *bench* ]]; then
  for cfg in gpt2-small-baseline-12 gpt2-small-stagformer-2x6; do
    ./.devbin/stagformer bench-train --config configs/$cfg.json --device cuda --batch 16 --seq 1024 \
      --steps 20 --warmup 3 -o json > "$out/bench-$cfg.json" 2>> "$out/bench.err"
    summary+=("bench $cfg: $(python3 -c "import json;d=json.load(open('$out/bench-$cfg.json'));print(f\"{d['tokens_per_second']:.0f} tok/s, {100*d['mfu']:.1f}% MFU, {d['median_step_ms']:.1f} ms/step\")" 2>&1 | tail -1)")
    # The same steps again with per-operation GPU times (SF_CUDA_PROFILE=1; slower, not reported).
    SF_CUDA_PROFILE=1 ./.devbin/stagformer bench-train --config configs/$cfg.json --device cuda \
      --batch 16 --seq 1024 --steps 5 --warmup 1 > /dev/null 2>> "$out/profile-$cfg.txt"
  done
fi

if [[ $what == *twin* && -f python/twin_bench.py ]]; then
  for cfg in gpt2-small-baseline-12 gpt2-small-stagformer-2x6; do
    PYTHONUNBUFFERED=1 timeout 300 python3 python/twin_bench.py --config configs/$cfg.json --batch 16 \
      --seq 1024 --steps 20 --compile --json "$out/twin-$cfg.json" >> "$out/twin.log" 2>&1
    summary+=("twin $cfg: exit $?, $(python3 -c "import json;d=json.load(open('$out/twin-$cfg.json'));print(f\"{d.get('tokens_per_s',0):.0f} tok/s, {100*d.get('mfu',0):.1f}% MFU, {d.get('median_step_ms',0):.1f} ms/step\")" 2>&1 | tail -1)")
  done
fi

printf '%s\n' "${summary[@]}" | tee "$out/summary.txt"

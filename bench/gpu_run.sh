#!/usr/bin/env bash
# GPU checks, training benchmarks and kernel profiles in one go, for a GPU machine that has the
# CUDA toolkit and PyTorch but not our build dependencies: run from the repository root after
# `bash scripts/devbin.sh` packed .devbin/ (carried to the machine).
#   bash bench/gpu_run.sh [tests] [bench] [nographs] [twin] [recompute] [profile]    (default: all)
# tests: the cuda_* and twin GPU tests; bench: `stagformer bench-train` of the GPT-2-small
# baseline and 2x6 StagFormer (batch 16 x 1024); nographs: the same without replaying recorded
# steps (CUDA graphs); twin: the same with the PyTorch twin under
# torch.compile; recompute: the baseline with and without activation recomputation at 16 x 1024
# and 4 x 4096; profile: bench/gpu_profile.sh (per-kernel times of our step).
# Logs go to a work folder that is packed into ${OUT:-gpu-out}/gpu-out.tgz (the device runner
# returns at most 8 files); summary.txt is also written next to it and printed last.
set -uo pipefail
dest=${OUT:-gpu-out}
mkdir -p "$dest"
out=$(mktemp -d)/gpu-out
mkdir -p "$out"
what=${*:-tests bench nographs twin recompute profile}
source bench/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
# The commit the binaries were built from (scripts/devbin.sh wrote it; this machine's .git may lag).
cp .devbin/built-from.txt "$out/built-from.txt" 2>/dev/null && cat "$out/built-from.txt"
configs="gpt2-small-baseline-12 gpt2-small-stagformer-2x6"
summary=()

if [[ $what == *tests* ]]; then
  # cuda_data_parallel_test skips itself on a machine with fewer than 2 GPUs (nvidia-h200-x2 runs it)
  for t in cuda_kernels_test cuda_attention_test cuda_model_test cuda_decode_test twin_test cuda_data_parallel_test; do
    [[ -x .devbin/$t ]] || { summary+=("$t: not built"); continue; }
    timeout ${TEST_TIMEOUT:-240} ./.devbin/$t --gtest_brief=1 > "$out/$t.log" 2>&1  # a hang costs one test, not the call
    rc=$?
    summary+=("$t: exit $rc, $(grep -c '^\[  FAILED' "$out/$t.log") failed lines")
  done
fi

if [[ $what == *bench* ]]; then
  for cfg in $configs; do
    ./.devbin/stagformer bench-train --config configs/$cfg.json --device cuda --batch 16 --seq 1024 \
      --steps 20 --warmup 3 -o json > "$out/bench-$cfg.json" 2>> "$out/bench.err"
    summary+=("bench $cfg: $(python3 -c "import json;d=json.load(open('$out/bench-$cfg.json'));print(f\"{d['tokens_per_second']:.0f} tok/s, {100*d['mfu']:.1f}% MFU, {d['median_step_ms']:.2f} ms/step\")" 2>&1 | tail -1)")
  done
fi

if [[ $what == *nographs* ]]; then
  # The same steps run directly instead of replayed from a recording (CUDA graphs).
  for cfg in $configs; do
    ./.devbin/stagformer bench-train --config configs/$cfg.json --device cuda --batch 16 --seq 1024 \
      --steps 20 --warmup 3 --no-graphs -o json > "$out/bench-nographs-$cfg.json" 2>> "$out/bench.err"
    summary+=("bench --no-graphs $cfg: $(python3 -c "import json;d=json.load(open('$out/bench-nographs-$cfg.json'));print(f\"{d['tokens_per_second']:.0f} tok/s, {100*d['mfu']:.1f}% MFU, {d['median_step_ms']:.2f} ms/step\")" 2>&1 | tail -1)")
  done
fi

if [[ $what == *twin* && -f python/twin_bench.py ]]; then
  for cfg in $configs; do
    PYTHONUNBUFFERED=1 timeout 300 python3 python/twin_bench.py --config configs/$cfg.json --batch 16 \
      --seq 1024 --steps 20 --compile --json "$out/twin-$cfg.json" >> "$out/twin.log" 2>&1
    summary+=("twin $cfg: exit $?, $(python3 -c "import json;d=json.load(open('$out/twin-$cfg.json'));print(f\"{d.get('tokens_per_s',0):.0f} tok/s, {100*d.get('mfu',0):.1f}% MFU, {d.get('median_step_ms',0):.2f} ms/step\")" 2>&1 | tail -1)")
  done
fi

if [[ $what == *recompute* ]]; then
  # Activation recomputation: its cost at the benchmark shape, and activations at a long sequence.
  for shape in "16 1024" "4 4096"; do
    set -- $shape
    for flag in "" --recompute; do
      name=recompute-$1x$2${flag:+-on}
      ./.devbin/stagformer bench-train --config configs/gpt2-small-baseline-12.json --device cuda \
        --batch $1 --seq $2 --set max_seq_len=$2 --steps 10 --warmup 2 $flag -o json > "$out/$name.json" 2>> "$out/bench.err"
      summary+=("$name: $(python3 -c "import json;d=json.load(open('$out/$name.json'));print(f\"{d['median_step_ms']:.2f} ms/step, {d['tokens_per_second']:.0f} tok/s, activations {d['activation_gib']:.2f} GiB\")" 2>&1 | tail -1)")
    done
  done
fi

if [[ $what == *profile* ]]; then
  OUT=$out bash bench/gpu_profile.sh ours > /dev/null 2>&1
  for cfg in $configs; do summary+=("profile $cfg: $(head -n 2 "$out/profile-ours-$cfg.txt" | tr '\n' ' ')"); done
fi

printf '%s\n' "${summary[@]}" | tee "$out/summary.txt"
cp "$out/summary.txt" "$dest/summary.txt"
tar czf "$dest/gpu-out.tgz" -C "$(dirname "$out")" gpu-out

#!/usr/bin/env bash
# Where a training step's GPU time goes, ours next to the compiled PyTorch twin: runs the
# training benchmark of each config under the kernel tracer (bench/kernel_trace/, a CUPTI
# injection library) and prints per-step tables: wall, GPU busy and idle time, time per kernel.
# Run on a GPU machine from the repository root after `bash scripts/devbin.sh` packed .devbin/:
#   bash bench/gpu_profile.sh [ours] [twin]      (default: both; configs: $CONFIGS)
# Writes ${OUT:-gpu-out}/profile-{ours,twin}-CFG.txt (tables) and timeline-*.txt (the last
# step's records in order, with the idle gap before each).
set -uo pipefail
out=${OUT:-gpu-out}
mkdir -p "$out"
what=${*:-ours twin}
source bench/gpu_env.sh
tracer=$PWD/.devbin/lib/libsf_kernel_trace.so
[[ -f $tracer ]] || { echo "gpu_profile: $tracer missing (run scripts/devbin.sh with a CUDA build)" >&2; exit 2; }
configs=${CONFIGS:-gpt2-small-baseline-12 gpt2-small-stagformer-2x6}
shape=(--batch 16 --seq 1024)
for cfg in $configs; do
  if [[ $what == *ours* ]]; then
    CUDA_INJECTION64_PATH=$tracer SF_KERNEL_TRACE=/tmp/trace-ours.tsv ./.devbin/stagformer bench-train \
      --config configs/$cfg.json --device cuda "${shape[@]}" --steps 4 --warmup 2 > /dev/null
    # a step starts with the upload of its tokens and targets (16 x 1024 int32 each)
    python3 bench/kernel_trace/summarize.py /tmp/trace-ours.tsv --boundary '^memcpy_htod 65536 B$' \
      --timeline "$out/timeline-ours-$cfg.txt" > "$out/profile-ours-$cfg.txt" 2>&1
  fi
  if [[ $what == *twin* ]]; then
    CUDA_INJECTION64_PATH=$tracer SF_KERNEL_TRACE=/tmp/trace-twin.tsv python3 python/twin_bench.py \
      --config configs/$cfg.json "${shape[@]}" --steps 4 --warmup 3 --compile > /dev/null
    # a step ends with the fused AdamW kernels (one run per parameter group: merged)
    python3 bench/kernel_trace/summarize.py /tmp/trace-twin.tsv --boundary 'fused_adamw' --at end \
      --timeline "$out/timeline-twin-$cfg.txt" > "$out/profile-twin-$cfg.txt" 2>&1
  fi
done
head -n 60 "$out"/profile-*.txt 2>/dev/null

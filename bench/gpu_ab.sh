#!/usr/bin/env bash
# Same-machine comparison of stagformer binaries packed into .devbin/ (machines of one kind
# differ by up to ~3% in step time, so step times compare only within one run): alternates the
# binaries ROUNDS times (default 2) on both benchmark models (batch 16 x 1024) and prints one
# line per run.
#   bash bench/gpu_ab.sh BINARY_A BINARY_B [BINARY_C ...] [ROUNDS]   e.g. stagformer-prev stagformer 2
set -uo pipefail
args=("$@")
rounds=2
if [[ ${#args[@]} -gt 2 && ${args[-1]} =~ ^[0-9]+$ ]]; then
  rounds=${args[-1]}
  unset 'args[-1]'
fi
[[ ${#args[@]} -ge 2 ]] || { echo "usage: bash bench/gpu_ab.sh BINARY_A BINARY_B [...] [ROUNDS]" >&2; exit 2; }
source bench/gpu_env.sh
for round in $(seq "$rounds"); do
  for bin in "${args[@]}"; do
    for cfg in gpt2-small-baseline-12 gpt2-small-stagformer-2x6; do
      json=$(./.devbin/"$bin" bench-train --config configs/$cfg.json --device cuda --batch 16 \
        --seq 1024 --steps 20 --warmup 3 -o json 2>/dev/null)
      python3 -c "import json,sys;d=json.loads(sys.argv[1]);print(f\"round $round $bin $cfg: {d['median_step_ms']:.2f} ms/step, {100*d['mfu']:.1f}% MFU\")" "$json" 2>&1 | tail -1
    done
  done
done

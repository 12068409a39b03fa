#!/usr/bin/env bash
# Same-machine comparison of stagformer binaries packed into .devbin/ (machines of one kind
# differ by up to ~3% in step time, so times compare only within one run): alternates the
# binaries ROUNDS times (default 2) on both benchmark models (the 12-layer baseline and the 2x6
# StagFormer; AB_CONFIGS names others) and prints one line per run.
#   bash bench/gpu_ab.sh BINARY_A BINARY_B [BINARY_C ...] [ROUNDS]   e.g. stagformer-prev stagformer 2
# AB_BENCH=train (default): training steps, batch 16 x 1024 (ms/step, MFU).
# AB_BENCH=decode: bf16 decoding at batch 1, staggered schedule, after a prompt
#   (AB_DECODE_ARGS, default "-p 512 -n 64 -d 512 -r 3"; tok/s).
# A binary packed as NAME.gz (scripts/devbin.sh gzips large files; `gzip -9` another build's
# stagformer beside it to fit the carry limit) is unpacked first.
set -uo pipefail
args=("$@")
rounds=2
if [[ ${#args[@]} -gt 2 && ${args[-1]} =~ ^[0-9]+$ ]]; then
  rounds=${args[-1]}
  unset 'args[-1]'
fi
[[ ${#args[@]} -ge 2 ]] || { echo "usage: bash bench/gpu_ab.sh BINARY_A BINARY_B [...] [ROUNDS]" >&2; exit 2; }
source bench/gpu_env.sh
for i in "${!args[@]}"; do
  bin=${args[$i]}
  if [[ $bin == *.gz ]]; then
    gunzip -kf ".devbin/$bin" && chmod +x ".devbin/${bin%.gz}"
    args[$i]=${bin%.gz}
  fi
done
for round in $(seq "$rounds"); do
  for bin in "${args[@]}"; do
    for cfg in ${AB_CONFIGS:-gpt2-small-baseline-12 gpt2-small-stagformer-2x6}; do
      if [[ ${AB_BENCH:-train} == decode ]]; then
        # shellcheck disable=SC2086  # the arguments are words
        row=$(./.devbin/"$bin" bench --config configs/$cfg.json --device cuda \
          ${AB_DECODE_ARGS:--p 512 -n 64 -d 512 -r 3} --decode staggered --no-bandwidth -o md 2>/dev/null |
          grep -E '^\| .*\| tg[0-9]+ @' | head -1)
        echo "round $round $bin $cfg: ${row:-no result}"
      else
        json=$(./.devbin/"$bin" bench-train --config configs/$cfg.json --device cuda --batch 16 \
          --seq 1024 --steps 20 --warmup 3 -o json 2>/dev/null)
        python3 -c "import json,sys;d=json.loads(sys.argv[1]);print(f\"round $round $bin $cfg: {d['median_step_ms']:.2f} ms/step, {100*d['mfu']:.1f}% MFU\")" "$json" 2>&1 | tail -1
      fi
    done
  done
done

#!/usr/bin/env bash
# gpu_decode.sh — the GPU decode benchmark of the one-GPU decoding issue: `stagformer bench
# --device cuda` (bf16) on the Llama-style shapes, tg after a prompt (-d) and pp, each StagFormer
# with the baseline of equal depth, the device's measured bandwidth in the same run. Writes one
# markdown file with the date, the GPU, the commit, every exact command and its table.
#
# Usage (on a GPU machine, after scripts/devbin.sh here and carrying .devbin there):
#   bash bench/gpu_decode.sh [small|large|all] [BATCH...]     (default: all, batch 1)
# Env: BENCH_PROMPT (-p and -d, default 512), BENCH_GEN (-n, default 128), BENCH_REPS (-r, 3),
#      STAGFORMER (default .devbin/stagformer), RESULTS_DIR (default bench/results), COMMIT.
set -uo pipefail
cd "$(dirname "$0")/.."
[[ -d .devbin/lib ]] && source bench/gpu_env.sh
which=${1:-all}
shift || true
batches=("${@:-1}")
bin=${STAGFORMER:-.devbin/stagformer}
prompt=${BENCH_PROMPT:-512}
gen=${BENCH_GEN:-128}
reps=${BENCH_REPS:-3}
results_dir=${RESULTS_DIR:-bench/results}
commit=${COMMIT:-$(head -1 .devbin/built-from.txt 2>/dev/null || git rev-parse --short HEAD)}
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
mkdir -p "$results_dir"
out="$results_dir/gpu-decode-$(date -u +%Y%m%d-%H%M%S).md"
configs=()
[[ $which == small || $which == all ]] && configs+=(gpt2-small-stagformer-2x6 gpt2-small-stagformer-2x6-shared)
[[ $which == large || $which == all ]] && configs+=(llama-1b-stagformer-2x12 llama-1b-stagformer-2x12-shared)
{
  echo "# GPU decode (bf16): StagFormer vs the baseline of equal depth (random weights)"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- device: ${gpu:-unknown GPU}"
  echo "- commit: $commit"
  echo "- tests: pp$prompt and tg$gen after a prompt of $prompt tokens, $reps timed repetitions after one warm-up"
  echo
} > "$out"
for cfg in "${configs[@]}"; do
  for b in "${batches[@]}"; do
    decode=staggered,sequential
    [[ $cfg == *shared* ]] && decode=staggered,sequential,recurrent
    cmd=("$bin" bench --config "configs/$cfg.json" --device cuda --baseline -p "$prompt" -n "$gen"
         -d "$prompt" -r "$reps" -b "$b" --decode "$decode" -o md)
    echo "gpu_decode.sh: ${cmd[*]}" >&2
    { echo "## $cfg, batch $b"; echo; echo '```sh'; echo "${cmd[*]}"; echo '```'; echo; } >> "$out"
    timeout 300 "${cmd[@]}" >> "$out" 2>> "$out.err" || echo "(exit $?)" >> "$out"
    echo >> "$out"
  done
done
echo "gpu_decode.sh: wrote $out" >&2

#!/usr/bin/env bash
# cpu_decode.sh — the CPU decode benchmark of the issue: a 2x6-layer StagFormer (d_model 768,
# random weights) against the 12-layer baseline of equal depth, tokens/s at batch 1 for each
# thread count given, staggered and sequential schedules. Writes one markdown file into
# bench/results/ with the date, machine, commit, the exact commands and their tables.
#
# Usage:   bash bench/cpu_decode.sh [THREADS...]        e.g. bash bench/cpu_decode.sh 2 8 16
#          (default: 2 and every core, when there are more than 2)
# Env:     BENCH_PROMPT (-p, default 128), BENCH_GEN (-n, default 64), BENCH_REPS (-r, default 3)
#            pp512/tg128, the llama-bench standard: BENCH_PROMPT=512 BENCH_GEN=128 BENCH_REPS=5
#          BENCH_CONFIG   model config (default configs/gpt2-small-stagformer-2x6.json)
#          BENCH_DECODE   schedules (default staggered,sequential; add recurrent for shared weights)
#          STAGFORMER     the binary (default build/stagformer)
#          COMMIT         the commit to record when there is no .git (a copy of the tree)
#          RESULTS_DIR    where the markdown goes (default bench/results)
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)

prompt=${BENCH_PROMPT:-128}
gen=${BENCH_GEN:-64}
reps=${BENCH_REPS:-3}
config=${BENCH_CONFIG:-configs/gpt2-small-stagformer-2x6.json}
bin=${STAGFORMER:-build/stagformer}
results_dir=${RESULTS_DIR:-bench/results}

if [[ ! -x "$bin" ]]; then
  echo "cpu_decode.sh: no stagformer binary at '$bin'; build it first" >&2
  echo "  (cmake -S . -B build -G Ninja && cmake --build build --target stagformer)" >&2
  echo "  or point STAGFORMER at one" >&2
  exit 1
fi
[[ -f "$config" ]] || { echo "cpu_decode.sh: no config '$config'" >&2; exit 1; }

cores=$(nproc)
if [[ $# -gt 0 ]]; then
  threads=("$@")
elif [[ $cores -gt 2 ]]; then
  threads=(2 "$cores")
else
  threads=(2)
fi
for t in "${threads[@]}"; do
  [[ "$t" =~ ^[0-9]+$ && "$t" -ge 1 ]] || { echo "cpu_decode.sh: thread count '$t' is not a positive integer" >&2; exit 1; }
done

source "$root/bench/record_env.sh"  # commit, date_utc, cpu, memory
host=$(hostname -s 2>/dev/null || echo host)
mkdir -p "$results_dir"
out="$results_dir/cpu-decode-$(date -u +%Y%m%d-%H%M%S)-$host.md"

{
  echo "# CPU decode: $(basename "$config" .json) vs the baseline of equal depth (random weights)"
  echo
  echo "- date: $date_utc"
  echo "- machine: $cpu, $cores logical CPUs, $memory memory, host $host"
  echo "- commit: $commit"
  echo "- config: \`$config\`; the baseline is built by \`--baseline\` (n_stacks 1, layers_per_stack 12,"
  echo "  separate weights: the same fields as configs/gpt2-small-baseline-12.json)"
  echo "- tests: pp$prompt and tg$gen, batch 1, $reps timed repetitions after one warm-up (mean ± sample std)"
  echo "- what the numbers mean, how bytes/step are counted: bench/README.md"
  echo
} >"$out"

for t in "${threads[@]}"; do
  cmd=("$bin" bench --config "$config" --baseline -p "$prompt" -n "$gen" -r "$reps" -b 1 -t "$t"
       --decode "${BENCH_DECODE:-staggered,sequential}" -o md)
  echo "cpu_decode.sh: ${cmd[*]}" >&2
  {
    echo "## $t threads"
    echo
    echo "\`\`\`sh"
    echo "${cmd[*]}"
    echo "\`\`\`"
    echo
  } >>"$out"
  "${cmd[@]}" >>"$out"
  echo >>"$out"
done

echo "cpu_decode.sh: wrote $out" >&2

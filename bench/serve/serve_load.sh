#!/usr/bin/env bash
# serve_load.sh — the load benchmark of `stagformer serve` on the CPU: starts the server with
# --slots 16 on a free port, runs 1, 4 and 16 concurrent streaming clients (build/serve_load_bench:
# TTFT and inter-token latency p50/p99, total generated tokens/s), stops the server with SIGTERM,
# and writes bench/results/serve-load-<date>-<host>.md with the date, machine, commit, the exact
# commands and the table. Then, for reference, one client against a server of one slot: what a
# single stream gets when no idle slot shares its steps.
#
# Builds nothing: it runs build/stagformer and build/serve_load_bench
#   (cmake --build build --target stagformer serve_load_bench).
# The model: SERVE_MODEL, or else one made once in $SERVE_WORK/model: SERVE_CONFIG (default the
# GPT-2-small-sized StagFormer 2x6, d_model 768, 176 M parameters, GPT-2 tokenizer) trained for 2
# steps on Moby-Dick — random-like weights, but the real size, so that a decode step costs what it
# would for a trained model of that size (tens of ms on a few cores).
#
# Usage:   bash bench/serve/serve_load.sh
# Env:     SERVE_CLIENTS   concurrent clients of each run (default "1 4 16")
#          SERVE_REQUESTS  requests per client (default 4)
#          SERVE_PROMPT    prompt tokens (default 64)      SERVE_GEN  max_tokens (default 64)
#          SERVE_SLOTS     the server's --slots (default 16)
#          SERVE_CTX       the server's --ctx (default 256: prompt and reply fit; less memory)
#          SERVE_OPTIONS   more options for both servers (e.g. "--prefill-tokens 64"; "--device cuda"
#                          runs the load on the GPU, and the record says which GPU)
#          SERVE_THREADS   the server's -t (default: every core)
#          SERVE_REFERENCE 0 skips the one-slot reference run
#          SERVE_QUIET_WAIT seconds to wait, before each run, for the other processes to leave the
#                          CPU (< 10% busy over a second; default 900): on a machine of a few
#                          cores, other work preempts the decoder's threads and every number with
#                          them. The CPU use seen before each run is recorded.
#          SERVE_RETRIES   a run during which other work took >= 10% of the CPU is run again, up
#                          to this many times (default 3); the record gives each kept run's share
#          SERVE_MODEL, SERVE_CONFIG, SERVE_WORK (default build/serve-load), RESULTS_DIR
#          STAGFORMER, LOAD_BENCH  the binaries; COMMIT  the commit to record without .git
set -euo pipefail

cd "$(dirname "$0")/../.."
root=$(pwd)

bin=${STAGFORMER:-build/stagformer}
load=${LOAD_BENCH:-build/serve_load_bench}
config=${SERVE_CONFIG:-configs/gpt2-small-stagformer-2x6.json}
work=${SERVE_WORK:-build/serve-load}
model=${SERVE_MODEL:-}
read -r -a clients <<<"${SERVE_CLIENTS:-1 4 16}"
requests=${SERVE_REQUESTS:-4}
prompt=${SERVE_PROMPT:-64}
gen=${SERVE_GEN:-64}
slots=${SERVE_SLOTS:-16}
ctx=${SERVE_CTX:-256}
threads=${SERVE_THREADS:-$(nproc)}
reference=${SERVE_REFERENCE:-1}
quiet_wait=${SERVE_QUIET_WAIT:-900}
retries=${SERVE_RETRIES:-3}
results_dir=${RESULTS_DIR:-bench/results}

for b in "$bin" "$load"; do
  if [[ ! -x "$b" ]]; then
    echo "serve_load.sh: no binary at '$b'; build it first:" >&2
    echo "  cmake --build build --target stagformer serve_load_bench" >&2
    exit 1
  fi
done
mkdir -p "$work" "$results_dir"

# ---- the model --------------------------------------------------------------------------------
setup_commands=()
if [[ -z "$model" ]]; then
  model=$work/model
  if [[ ! -f "$model/model.safetensors" ]]; then
    setup_commands=(
      "$bin prepare --tokenizer gpt2 --doc-boundary '^CHAPTER ' --out $work/data --no-progress third_party_data/moby-dick.txt"
      "$bin train --config $config --data $work/data --out $model --steps 2 --batch 1 --seq 64 --eval-every 0 --eval-batches 1 --checkpoint-every 0 --keep-checkpoints 1 --no-progress"
    )
    for c in "${setup_commands[@]}"; do
      echo "+ $c" >&2
      eval "$c" >&2
    done
    rm -rf "$model/checkpoints"  # the optimizer state: 1.4 GB the server does not read
  fi
  model_note="\`$config\` trained for 2 steps (batch 1, 64 tokens) on Moby-Dick with the GPT-2 tokenizer: random-like weights at the real size"
else
  model_note="\`$model\` (SERVE_MODEL)"
fi

# ---- the record's header ----------------------------------------------------------------------
source "$root/bench/record_env.sh"  # commit, date_utc, cpu, memory
host=$(hostname -s 2>/dev/null || echo host)
out="$results_dir/serve-load-$(date -u +%Y%m%d-%H%M%S)-$host.md"

# ---- the server -------------------------------------------------------------------------------
server_pid=""
stop_server() {
  if [[ -n "$server_pid" ]]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
trap stop_server EXIT

# Starts `stagformer serve` with the given extra options on a free port (--port 0: the server
# picks one and prints it); sets server_pid, port and server_line.
start_server() {
  local log=$work/serve.log
  server_command="$bin serve -m $model --port 0 -t $threads --name bench $*"
  # shellcheck disable=SC2086
  $server_command 2>"$log" &
  server_pid=$!
  port=""
  for _ in $(seq 600); do
    port=$(grep -o 'http://[0-9.]*:[0-9]*' "$log" 2>/dev/null | head -1 | sed 's/.*://' || true)
    [[ -n "$port" ]] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
      echo "serve_load.sh: the server did not start:" >&2
      cat "$log" >&2
      exit 1
    fi
    sleep 0.2
  done
  [[ -n "$port" ]] || { echo "serve_load.sh: the server printed no address in 120 s" >&2; exit 1; }
  server_line=$(grep -m1 '^serve:' "$log")
}

# The share of the CPU (all cores) busy over one second, in percent, from /proc/stat.
cpu_busy() {
  local a b
  read -r -a a < <(grep '^cpu ' /proc/stat)
  sleep 1
  read -r -a b < <(grep '^cpu ' /proc/stat)
  local total=0 idle=$(( (b[4] + b[5]) - (a[4] + a[5]) ))
  for i in 1 2 3 4 5 6 7 8; do total=$(( total + b[i] - a[i] )); done
  echo $(( total > 0 ? 100 * (total - idle) / total : 0 ))
}
# Waits (up to quiet_wait seconds) until the CPU is quiet; sets busy_before to what it saw last.
wait_quiet() {
  local waited=0
  busy_before=$(cpu_busy)
  while (( busy_before >= 10 && waited < quiet_wait )); do
    (( waited % 60 == 0 )) && echo "serve_load.sh: the CPU is ${busy_before}% busy with other work; waiting" >&2
    sleep 4
    waited=$(( waited + 5 ))
    busy_before=$(cpu_busy)
  done
}

# Busy jiffies of the whole machine (steal included: a VM's host taking the CPU), all jiffies,
# and the server's own (every thread): "busy total server".
cpu_counters() {
  local fields stat
  read -r -a fields < <(grep '^cpu ' /proc/stat)
  local busy=$(( fields[1] + fields[2] + fields[3] + fields[6] + fields[7] + fields[8] )) total=0
  for i in 1 2 3 4 5 6 7 8; do total=$(( total + fields[i] )); done
  read -r -a stat < <(sed 's/^.*) //' "/proc/$server_pid/stat")
  echo "$busy $total $(( stat[11] + stat[12] ))"  # utime, stime: fields 14 and 15
}

# One run of the load generator; appends its row to rows, its JSON to jsons, its command to
# commands. A run during which other work took 10% of the CPU or more is run again (up to
# `retries` more times); the record says what each kept run saw.
rows=() jsons=() commands=() busy_notes=() failed_runs=()
run_load() {
  local c=$1 header=$2
  local command="$load --port $port -c $c -r $requests -p $prompt -n $gen --temperature 0 --json $work/load-c$c.json"
  [[ "$header" == 1 ]] && command="$command --header"
  local row before after client_jiffies other during attempt=0
  while true; do
    wait_quiet
    echo "+ $command  (CPU ${busy_before}% busy before)" >&2
    read -r -a before < <(cpu_counters)
    row=$($command) || failed_runs+=("$c")  # (failed requests are in the row; the script fails at the end)
    read -r -a after < <(cpu_counters)
    # Other work during the run: the machine's busy time less the server's and the client's.
    client_jiffies=$(grep -o '"client_cpu_s": *[0-9.e+-]*' "$work/load-c$c.json" | sed 's/.*: *//' |
                     awk -v hz="$(getconf CLK_TCK)" '{printf "%d", $1 * hz}')
    other=$(( (after[0] - before[0]) - (after[2] - before[2]) - client_jiffies ))
    during=$(( 100 * (other > 0 ? other : 0) / (after[1] - before[1] > 0 ? after[1] - before[1] : 1) ))
    attempt=$(( attempt + 1 ))
    (( during < 10 || attempt > retries )) && break
    echo "serve_load.sh: other work took ${during}% of the CPU during the run; running it again" >&2
  done
  busy_notes+=("$c client(s) ${busy_before}% before, ${during}% during (attempt $attempt)")
  echo "$row"
  rows+=("$row")
  jsons+=("$(tr -d '\n' <"$work/load-c$c.json" | tr -s ' ')")
  commands+=("$command")
}

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
# shellcheck disable=SC2086
start_server --slots "$slots" --ctx "$ctx" ${SERVE_OPTIONS:-}
main_server_command=$server_command
main_server_line=$server_line
first=1
for c in "${clients[@]}"; do
  run_load "$c" "$first"
  first=0
done
stop_server

reference_row="" reference_json="" reference_command="" reference_server_command="" reference_server_line=""
if [[ "$reference" != 0 ]]; then
  # shellcheck disable=SC2086
  start_server --slots 1 --ctx "$ctx" ${SERVE_OPTIONS:-}
  reference_server_command=$server_command
  reference_server_line=$server_line
  run_load 1 0 >/dev/null
  reference_row=${rows[-1]} reference_json=${jsons[-1]} reference_command=${commands[-1]}
  unset 'rows[-1]' 'jsons[-1]' 'commands[-1]'
  stop_server
fi
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- the record -------------------------------------------------------------------------------
{
  if [[ " ${SERVE_OPTIONS:-} " == *" --device cuda "* ]]; then
    echo "# stagformer serve under load: concurrent streaming clients on the GPU"
  else
    echo "# stagformer serve under load: concurrent streaming clients on the CPU"
  fi
  echo
  echo "- date: $date_utc"
  echo "- machine: ${cpu:-unknown CPU}, $(nproc) logical CPUs, $memory memory, host $host;" \
       "load average $load_start at the start, $load_end at the end"
  if [[ " ${SERVE_OPTIONS:-} " == *" --device cuda "* ]] && command -v nvidia-smi >/dev/null; then
    echo "- GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"
  fi
  echo "- commit: $commit"
  echo "- model: $model_note"
  echo "- server: \`$main_server_command\`"
  echo "  - $main_server_line"
  busy_text=$(printf '%s; ' "${busy_notes[@]}")
  [[ -n "$reference_row" ]] && busy_text="$busy_text(the last: the one-slot reference)"
  echo "- CPU busy with other work (share of all cores; before: over the second before the run," \
       "during: the machine's busy time less the server's and the client's): ${busy_text%; }"
  echo "- load: each client sends $requests streamed /v1/completions requests one after the other:" \
       "a fixed prompt of $prompt tokens, max_tokens $gen, temperature 0; one untimed warm-up request first"
  echo "- TTFT: request sent -> first event carrying text; ITL: the gaps between events carrying text" \
       "(p50/p99 over every request of the run); tokens/s: usage.completion_tokens of every request" \
       "/ the run's wall time. \"ended early\": requests that met end-of-text before max_tokens" \
       "(the API has no ignore_eos)."
  if [[ ${#failed_runs[@]} -gt 0 ]]; then
    echo "- **requests failed** in the run(s) of ${failed_runs[*]} client(s): the failed column, and" \
         "first_error in the JSON"
  fi
  if [[ ${#setup_commands[@]} -gt 0 ]]; then
    echo
    echo "The model, made by the script:"
    echo
    echo '```sh'
    for c in "${setup_commands[@]}"; do echo "$c"; done
    echo '```'
  fi
  echo
  echo "## --slots $slots, 1 to ${clients[-1]} clients"
  echo
  echo '```sh'
  echo "$main_server_command &"
  for c in "${commands[@]}"; do echo "$c"; done
  echo "kill -TERM \$server_pid"
  echo '```'
  echo
  for r in "${rows[@]}"; do echo "$r"; done
  if [[ -n "$reference_row" ]]; then
    echo
    echo "## Reference: one client, --slots 1"
    echo
    echo '```sh'
    echo "$reference_server_command &"
    echo "$reference_command"
    echo '```'
    echo
    echo "  - $reference_server_line"
    echo
    printf '%s\n' "${rows[0]}" | head -2  # the table's header
    echo "$reference_row"
  fi
  echo
  echo "## JSON"
  echo
  echo '```json'
  for j in "${jsons[@]}"; do echo "$j"; done
  [[ -n "$reference_json" ]] && echo "$reference_json"
  echo '```'
} >"$out"
echo "serve_load.sh: wrote $out" >&2
[[ ${#failed_runs[@]} -eq 0 ]] || { echo "serve_load.sh: requests failed (see the record)" >&2; exit 1; }

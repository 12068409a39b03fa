#!/usr/bin/env bash
# launch.sh — starts one host's share of a data-parallel job, like torchrun: one process per GPU,
# each with RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT and
# NCCL_NVLS_ENABLE=0 set (docs/data-parallel.md).
#
#   bash scripts/launch.sh --nproc N [--nnodes M --node-rank K] [--master-addr HOST]
#                          [--master-port P] [--grace S] -- COMMAND [ARGS...]
#
#   --nproc N         processes (GPUs) on this host
#   --nnodes M        hosts in the job (default 1); run the launcher once per host, each with
#                     its own --node-rank K (0..M-1) and the same --master-addr (host of node 0)
#   --master-addr     rank 0's host (default $MASTER_ADDR, else 127.0.0.1 for one host)
#   --master-port     a free TCP port on rank 0's host (default $MASTER_PORT, else 29500)
#   --grace S         seconds a process gets to exit after SIGTERM before SIGKILL (default 10)
#
# Every output line of a process is prefixed with "[rank R] ". The launcher waits for all
# processes and exits 0 when all succeed; when one fails it stops the others (SIGTERM, SIGKILL
# after the grace) and exits with the failed one's status. Ctrl-C or SIGTERM to the launcher is
# forwarded to every process exactly once (each rank runs in its own process group, so the
# terminal's Ctrl-C reaches only the launcher): the trainer then writes a checkpoint and exits;
# a second Ctrl-C stops it at once.
set -uo pipefail

fail() {
  echo "launch.sh: $*" >&2
  exit 2
}

usage() {  # $1: exit status (0 for --help)
  sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }

nproc=""
nnodes=1
node_rank=0
master_addr="${MASTER_ADDR:-}"
master_port="${MASTER_PORT:-29500}"
grace=10
while (($# > 0)); do
  case "$1" in
    --nproc) nproc="${2-}"; shift 2 || usage ;;
    --nnodes) nnodes="${2-}"; shift 2 || usage ;;
    --node-rank) node_rank="${2-}"; shift 2 || usage ;;
    --master-addr) master_addr="${2-}"; shift 2 || usage ;;
    --master-port) master_port="${2-}"; shift 2 || usage ;;
    --grace) grace="${2-}"; shift 2 || usage ;;
    -h | --help) usage 0 ;;
    --) shift; break ;;
    *) fail "unknown option '$1' (the command goes after --; --help shows the options)" ;;
  esac
done
(($# > 0)) || fail "no command: bash scripts/launch.sh --nproc N -- stagformer train ..."
is_uint "$nproc" && ((nproc >= 1)) || fail "--nproc '$nproc' is not a positive integer"
is_uint "$nnodes" && ((nnodes >= 1)) || fail "--nnodes '$nnodes' is not a positive integer"
is_uint "$node_rank" && ((node_rank < nnodes)) ||
  fail "--node-rank '$node_rank' is not in 0..$((nnodes - 1)) (--nnodes $nnodes)"
is_uint "$master_port" && ((master_port >= 1 && master_port <= 65535)) ||
  fail "--master-port '$master_port' is not a TCP port (1..65535)"
is_uint "$grace" || fail "--grace '$grace' is not a whole number of seconds"
if [[ -z "$master_addr" ]]; then
  ((nnodes == 1)) ||
    fail "--master-addr (or MASTER_ADDR) must name node 0's host with --nnodes $nnodes"
  master_addr=127.0.0.1
fi
world=$((nnodes * nproc))

# Job control: every background job gets its own process group, so a Ctrl-C at the terminal
# signals the launcher alone, and the launcher forwards it once (see the header).
set -m

declare -A rank_of=()  # pid -> rank
running=()
for ((local_rank = 0; local_rank < nproc; local_rank++)); do
  rank=$((node_rank * nproc + local_rank))
  # The prefixer ignores INT/TERM: it must outlive its process to pass on the last lines.
  RANK=$rank LOCAL_RANK=$local_rank WORLD_SIZE=$world LOCAL_WORLD_SIZE=$nproc \
    MASTER_ADDR=$master_addr MASTER_PORT=$master_port NCCL_NVLS_ENABLE=0 \
    "$@" > >(trap '' INT TERM; exec sed -u "s/^/[rank $rank] /") 2>&1 &
  rank_of[$!]=$rank
  running+=("$!")
done
set +m  # the groups are made
# From here on the launcher's own messages go to fd 3; fd 2 is silenced because bash reports
# every rank that dies by a signal (the SIGKILL below) with a "Killed" notice.
exec 3>&2 2>/dev/null

forget() {  # removes a finished pid from `running`
  local pid kept=()
  for pid in "${running[@]}"; do [[ "$pid" == "$1" ]] || kept+=("$pid"); done
  running=("${kept[@]}")
}

forward() {  # sends signal $1 to the process group of every rank still running
  local pid
  for pid in "${running[@]}"; do kill -s "$1" -- "-$pid" 2>/dev/null; done
}
trap 'forward INT' INT
trap 'forward TERM' TERM

status=0
killer=""
# Records that `pid` exited with `code`; the first failure stops the others.
finished_with() {
  local pid=$1 code=$2
  forget "$pid"
  ((code != 0 && status == 0)) || return 0
  status=$code
  echo "launch.sh: rank ${rank_of[$pid]} exited with status $code; stopping the others" >&3
  forward TERM
  if ((${#running[@]} > 0)); then
    # A rank blocked in a collective with a dead peer cannot finish its step: SIGKILL after
    # the grace.
    local groups=("${running[@]/#/-}")
    (sleep "$grace"; kill -KILL -- "${groups[@]}") >/dev/null 2>&1 3>&- &
    killer=$!
  fi
}
while ((${#running[@]} > 0)); do
  finished=""
  wait -n -p finished "${running[@]}"
  code=$?
  if [[ -n "${finished:-}" ]]; then
    finished_with "$finished" "$code"
    continue
  fi
  # A trapped signal interrupted the wait, or bash reaped a rank already (wait -n then no longer
  # knows it, but a plain wait still has its status).
  for pid in "${running[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid"
      finished_with "$pid" "$?"
    fi
  done
  sleep 0.05
done
[[ -n "$killer" ]] && kill "$killer" 2>/dev/null
exit "$status"

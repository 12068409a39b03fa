#!/usr/bin/env bash
# ab_binaries.sh — an A/B of two stagformer builds on the same GPU in one run: the decode
# benchmark (bf16, batch 1, tg after a prompt) of each config, alternating A, B, A, B so that
# clock and thermal drift fall on both alike. For keeping or dropping a kernel change: build the
# other version's stagformer here, pack it (gzip) into .devbin beside the current one, and run
#   bash bench/ab_binaries.sh .devbin/stagformer .devbin/stagformer-other.gz [CONFIG...]
# (default configs: the 12-layer baseline and the 2x6 StagFormer). A .gz binary is unpacked
# first. Env: AB_ARGS (the bench size, default "-p 512 -n 64 -d 512 -r 3"), AB_DEVICE
# (default cuda). Prints the benchmark's table row of each run, led by the binary and round.
set -uo pipefail
cd "$(dirname "$0")/.."
[[ -d .devbin/lib ]] && source bench/gpu_env.sh
unpack() {
  if [[ $1 == *.gz ]]; then gunzip -kf "$1" && chmod +x "${1%.gz}"; echo "${1%.gz}"; else echo "$1"; fi
}
a=$(unpack "$1") b=$(unpack "$2")
shift 2
configs=("${@:-gpt2-small-baseline-12 gpt2-small-stagformer-2x6}")
read -r -a configs <<< "${configs[*]}"
echo "binary (round), then the benchmark's table row (model, params, backend, threads, batch, schedule, test, tok/s):"
for round in 1 2; do
  for bin in "$a" "$b"; do
    for cfg in "${configs[@]}"; do
      "$bin" bench --config "configs/$cfg.json" --device "${AB_DEVICE:-cuda}" ${AB_ARGS:--p 512 -n 64 -d 512 -r 3} \
        --decode staggered --no-bandwidth -o md 2>&1 |
        awk -v bin="$(basename "$bin") (round $round)" '/^\| .*\| tg[0-9]+ @/ { print "| " bin " " $0 }'
    done
  done
done

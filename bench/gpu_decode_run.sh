#!/usr/bin/env bash
# gpu_decode_run.sh — one device call for the GPU-decoding work: the decode tests, a kernel trace
# of decode steps, the decode benchmark (bench/gpu_decode.sh) and the PyTorch twin's decoder as
# the speed reference, all on the binaries scripts/devbin.sh packed into .devbin/.
#   bash bench/gpu_decode_run.sh [tests] [programs] [kernels] [profile] [ab] [versus] [bench] [sanitize] [twin]
#   (default: all but sanitize, which runs compute-sanitizer's memcheck and racecheck)
# programs: the decode tests again with SF_STEP_PROGRAM=1 (the recorded steps as persistent
# programs, streamed products included: CudaDecodeStreamed).
# kernels: bench/cuda's linear_small_bench and attention_step_bench, where packed.
# ab: the 12-layer baseline's tg64 at batch 1 with dependent launches off (SF_PDL=0) and with
# recorded steps off (SF_DECODE_GRAPHS=0), next to the default.
# versus (not in the default): this build against another commit's (BASE_BINARY, default
# .devbin/stagformer_base; BASE_CONFIGS, BASE_ROUNDS), alternating, in the same call.
# Env: PROFILE_CONFIGS (default: the 12-layer baseline and 2x6), PROFILE_ENV (default SF_PDL=0),
#      TWIN_CONFIGS (default: the four StagFormer configs of bench/gpu_decode.sh, each with its
#      baseline),
#      BENCH_SET (small|large|all,
#      default small), BENCH_BATCHES (default "1 8 32": the issue's batches), BENCH_GEN (default 128:
#      tg128 after 512 tokens, as the issue asks), TEST_TIMEOUT (s per test binary, 240).
# Writes into ${OUT:-gpu-out}: summary.txt, gpu-decode-*.md (the benchmark record) and
# logs.tgz (every log and trace table); the device runner returns at most 8 files.
set -uo pipefail
cd "$(dirname "$0")/.."
dest=${OUT:-gpu-out}
mkdir -p "$dest"
work=$(mktemp -d)/logs
mkdir -p "$work"
what=${*:-tests programs kernels profile ab bench twin}
source bench/gpu_env.sh
summary=()
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader > "$work/gpu.txt"
summary+=("gpu: $(cat "$work/gpu.txt")" "binaries: $(tr '\n' ' ' < .devbin/built-from.txt)")

if [[ $what == *tests* ]]; then
  for t in cuda_kernels_test cuda_decode_test cuda_attention_test twin_decode_test; do
    [[ -f .devbin/$t.gz ]] && gunzip -kf ".devbin/$t.gz" && chmod +x ".devbin/$t"
    [[ -x .devbin/$t ]] || { summary+=("$t: not packed"); continue; }
    timeout "${TEST_TIMEOUT:-240}" ./.devbin/$t --gtest_brief=1 > "$work/$t.log" 2>&1
    rc=$?
    summary+=("$t: exit $rc, $(grep -c '^\[  FAILED' "$work/$t.log") failed lines, $(grep -E '^\[  PASSED' "$work/$t.log" | head -1)")
  done
fi

if [[ $what == *programs* ]]; then
  t=cuda_decode_test
  [[ -f .devbin/$t.gz ]] && gunzip -kf ".devbin/$t.gz" && chmod +x ".devbin/$t"
  if [[ -x .devbin/$t ]]; then
    SF_STEP_PROGRAM=1 timeout "${TEST_TIMEOUT:-240}" ./.devbin/$t --gtest_brief=1 > "$work/$t-programs.log" 2>&1
    rc=$?
    summary+=("$t with SF_STEP_PROGRAM=1: exit $rc, $(grep -c '^\[  FAILED' "$work/$t-programs.log") failed lines, $(grep -E '^\[  PASSED' "$work/$t-programs.log" | head -1)")
  else
    summary+=("$t: not packed")
  fi
fi

if [[ $what == *kernels* ]]; then
  for b in linear_small_bench attention_step_bench; do
    [[ -f .devbin/$b.gz ]] && gunzip -kf ".devbin/$b.gz" && chmod +x ".devbin/$b"
    [[ -x .devbin/$b ]] || { summary+=("$b: not packed"); continue; }
    timeout 120 ./.devbin/$b > "$work/$b.md" 2>&1
    summary+=("$b: exit $?" "$(grep -E '^\|' "$work/$b.md")")
  done
fi

if [[ $what == *profile* ]]; then
  tracer=$PWD/.devbin/lib/libsf_kernel_trace.so
  for cfg in ${PROFILE_CONFIGS:-gpt2-small-baseline-12 gpt2-small-stagformer-2x6}; do
    # A decode step starts with the upload of its indices (token, positions, slots, key ranges:
    # 36 bytes per row). Traced with dependent launches off (SF_PDL=0, PROFILE_ENV): with them a
    # kernel's record would include the time it waits for the previous one.
    env ${PROFILE_ENV:-SF_PDL=0} CUDA_INJECTION64_PATH=$tracer SF_KERNEL_TRACE=/tmp/trace-$cfg.tsv ./.devbin/stagformer bench \
      --config configs/$cfg.json --device cuda -p 512 -n 32 -d 512 -r 1 --decode staggered \
      --no-bandwidth -o md > "$work/bench-trace-$cfg.md" 2>&1
    python3 bench/kernel_trace/summarize.py /tmp/trace-$cfg.tsv --boundary '^memcpy_htod [0-9]+ B$' \
      --last 8 --timeline "$work/timeline-$cfg.txt" --top 14 > "$work/profile-$cfg.txt" 2>&1
    summary+=("profile $cfg: $(head -n 3 "$work/profile-$cfg.txt" | tr '\n' ' ')")
  done
fi

if [[ $what == *ab* ]]; then
  for setting in default SF_PDL=0 SF_DECODE_GRAPHS=0 "SF_PDL=0 SF_DECODE_GRAPHS=0"; do
    env_args=()
    [[ $setting != default ]] && env_args=($setting)
    env "${env_args[@]}" ./.devbin/stagformer bench --config configs/gpt2-small-baseline-12.json \
      --device cuda -p 512 -n 64 -d 512 -r 3 --decode sequential --no-bandwidth -o md \
      > "$work/ab-${setting// /-}.md" 2>&1
    summary+=("ab $setting: $(grep -E '^\| .*tg64' "$work/ab-${setting// /-}.md" | head -1)")
  done
fi

if [[ $what == *versus* ]]; then
  # Two builds in one call, alternating (BASE_ROUNDS rounds): .devbin/stagformer against
  # BASE_BINARY, another commit's stagformer (here: `git worktree add /tmp/base COMMIT`, build
  # it there, and after scripts/devbin.sh `strip -o .devbin/stagformer_base /tmp/base/build/
  # stagformer`; it uses the same .devbin/lib), tg128 after 512 tokens at batch 1 for each of
  # BASE_CONFIGS.
  base=${BASE_BINARY:-.devbin/stagformer_base}
  if [[ -x $base ]]; then
    for round in $(seq "${BASE_ROUNDS:-2}"); do
      for cfg in ${BASE_CONFIGS:-gpt2-small-baseline-12 gpt2-small-stagformer-2x6 llama-1b-baseline-24}; do
        for bin in "$base" ./.devbin/stagformer; do
          "$bin" bench --config "configs/$cfg.json" --device cuda -p 512 -n 128 -d 512 -r 3 -b 1 \
            --decode staggered --no-bandwidth -o md > "$work/versus-$round-$cfg-$(basename "$bin").md" 2>&1
          summary+=("versus round $round $(basename "$bin") $cfg: $(grep -E '^\| .*\| tg128 @' "$work/versus-$round-$cfg-$(basename "$bin").md" | head -1)")
        done
      done
    done
  else
    summary+=("versus: no base binary at $base")
  fi
fi

if [[ $what == *bench* ]]; then
  RESULTS_DIR=$dest BENCH_GEN=${BENCH_GEN:-128} bash bench/gpu_decode.sh "${BENCH_SET:-small}" \
    ${BENCH_BATCHES:-1 8 32} 2> "$work/gpu_decode.err"
  for f in "$dest"/gpu-decode-*.md; do
    summary+=("bench $(basename "$f"):")
    while IFS= read -r line; do summary+=("  $line"); done < <(grep -E 'tg[0-9]+ @|staggered / ' "$f" | grep -v bandwidth)
  done
fi

if [[ $what == *sanitize* ]]; then
  # compute-sanitizer: memcheck (out-of-bounds and misaligned accesses) over the decode tests'
  # BF16 comparisons of every variant and the decode kernels' tests; racecheck (shared-memory
  # hazards) over the decode kernels' tests (over the whole decode tests it does not finish in
  # minutes). Each time-boxed (SANITIZE_TIMEOUT, s).
  for t in cuda_decode_test cuda_kernels_test; do
    [[ -f .devbin/$t.gz ]] && gunzip -kf ".devbin/$t.gz" && chmod +x ".devbin/$t"
  done
  if command -v compute-sanitizer > /dev/null; then
    run_tool() {  # name tool binary filter
      timeout "${SANITIZE_TIMEOUT:-120}" compute-sanitizer --tool "$2" --error-exitcode 9 \
        "./.devbin/$3" --gtest_brief=1 --gtest_filter="$4" > "$work/sanitize-$1.log" 2>&1
      summary+=("$2 $3 ($4): exit $?, $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$work/sanitize-$1.log" | tail -1) $(grep -E '^\[  (PASSED|FAILED)' "$work/sanitize-$1.log" | head -1)")
    }
    run_tool memcheck-decode memcheck cuda_decode_test '*Bf16MatchesTheCpuDecoder*'
    SF_STEP_PROGRAM=1 run_tool memcheck-programs memcheck cuda_decode_test 'CudaDecodeStreamed*'
    run_tool memcheck-kernels memcheck cuda_kernels_test '*LinearMany*:*AttentionStep*'
    run_tool racecheck-kernels racecheck cuda_kernels_test '*AttentionStep*:*LinearManyMatchesTheCpu*:*LinearManyOutputsDoNot*'
  else
    summary+=("sanitize: compute-sanitizer not on this machine")
  fi
fi

if [[ $what == *twin* ]]; then
  if python3 -c 'import torch' 2> /dev/null; then
    PYTHONUNBUFFERED=1 timeout 300 python3 python/twin_decode.py selftest --quick --cuda > "$work/twin-selftest.log" 2>&1
    summary+=("twin decode selftest --cuda: exit $?")
    # Every row of the decode benchmark needs its twin row in the same device call (the issue's
    # "every row >= 2x the twin"): each config with its baseline of equal depth.
    for cfg in ${TWIN_CONFIGS:-gpt2-small-stagformer-2x6 gpt2-small-stagformer-2x6-shared llama-1b-stagformer-2x12 llama-1b-stagformer-2x12-shared}; do
      PYTHONUNBUFFERED=1 timeout 400 python3 python/twin_decode.py bench --config configs/$cfg.json \
        --baseline --gen 128 --md > "$work/twin-bench-$cfg.md" 2>&1
      summary+=("twin decode bench $cfg: exit $?" "$(grep -E '^\|' "$work/twin-bench-$cfg.md" | tail -n 8)")
    done
  else
    summary+=("twin: PyTorch not installed on this machine")
  fi
fi

printf '%s\n' "${summary[@]}" | tee "$dest/summary.txt"
tar czf "$dest/logs.tgz" -C "$(dirname "$work")" logs

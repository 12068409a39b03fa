#!/usr/bin/env bash
# fuzz.sh — builds the libFuzzer harnesses of tests/fuzz (every loader of a file a user might
# receive), writes their seed corpora with the project's own writers, runs each harness for a
# while and prints a table of executions and findings.
#
#   bash scripts/fuzz.sh [SECONDS] [HARNESS...]
#     SECONDS   time per harness (default 10)
#     HARNESS   names like fuzz_safetensors or safetensors (default: every tests/fuzz/fuzz_*.cpp)
#
# Needs the Debian packages of scripts/setup.sh (clang, its sanitizer runtimes, libomp). Everything
# lives in build-fuzz/ (git-ignored), configured with clang and SF_FUZZ=ON and built incrementally:
#   build-fuzz/corpus/<harness>/       seeds, rewritten on every run by sf_fuzz_make_seeds
#   build-fuzz/corpus-run/<harness>/   the working corpus libFuzzer grows (seeds copied in; kept)
#   build-fuzz/findings/<harness>/     crash-*, leak-*, timeout-*, oom-* inputs (kept)
#   build-fuzz/logs/<harness>.log      libFuzzer's output of the last run (stack traces)
# A harness stops at its first finding. Reproduce one with
#   build-fuzz/fuzz_<harness> build-fuzz/findings/<harness>/crash-...
# (SF_FUZZ_VERBOSE=1 prints the sf::Error message of every refused input).
#
# Exit status: 0 when no harness found anything, 1 when any did, 2 on a usage or build error.
# Environment: SF_FUZZ_JOBS (build parallelism, default 2), SF_FUZZ_TIMEOUT (seconds one input
# may take before it counts as a timeout finding, default 10).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
build="$repo/build-fuzz"
seconds="${1:-10}"
if [[ $# -gt 0 ]]; then shift; fi
[[ "$seconds" =~ ^[0-9]+$ && "$seconds" -gt 0 ]] || {
  echo "usage: $0 [SECONDS] [HARNESS...]" >&2
  exit 2
}
jobs="${SF_FUZZ_JOBS:-2}"
input_timeout="${SF_FUZZ_TIMEOUT:-10}"

die() { echo "fuzz: ERROR: $*" >&2; exit 2; }

# ---- the harness list ----------------------------------------------------------------------------
all=()
for f in "$repo"/tests/fuzz/fuzz_*.cpp; do all+=("$(basename "$f" .cpp)"); done
harnesses=()
if [[ $# -eq 0 ]]; then
  harnesses=("${all[@]}")
else
  for h in "$@"; do
    [[ "$h" == fuzz_* ]] || h="fuzz_$h"
    [[ -f "$repo/tests/fuzz/$h.cpp" ]] || die "no harness $h (have: ${all[*]})"
    harnesses+=("$h")
  done
fi

# ---- configure (once) and build (incremental) ----------------------------------------------------
cxx=""
for c in clang++-14 clang++; do
  if command -v "$c" >/dev/null; then cxx="$(command -v "$c")"; break; fi
done
[[ -n "$cxx" ]] || die "clang++ not found; run: bash scripts/setup.sh"
command -v cmake >/dev/null && command -v ninja >/dev/null ||
  die "cmake/ninja missing; run: bash scripts/setup.sh"

build_started=$SECONDS
if [[ ! -f "$build/build.ninja" ]] ||
  ! grep -q '^SF_FUZZ:BOOL=ON' "$build/CMakeCache.txt" 2>/dev/null; then
  echo "fuzz: configuring $build with $cxx"
  mkdir -p "$build"
  cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_CXX_COMPILER="$cxx" -DSF_FUZZ=ON \
    -DSF_ENABLE_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build/configure.log" 2>&1 ||
    { cat "$build/configure.log" >&2; die "cmake configure failed"; }
fi
echo "fuzz: building (ninja -j$jobs)"
cmake --build "$build" -j "$jobs" --target "${harnesses[@]}" sf_fuzz_make_seeds ||
  die "build failed"
echo "fuzz: build took $((SECONDS - build_started)) s"

# The harnesses must not spread over threads: one input at a time, one core.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
symbolizer="$(command -v llvm-symbolizer-14 || command -v llvm-symbolizer || true)"
[[ -n "$symbolizer" ]] && export ASAN_SYMBOLIZER_PATH="$symbolizer"

# ---- seeds ---------------------------------------------------------------------------------------
rm -rf "$build/corpus"
"$build/sf_fuzz_make_seeds" "$build/corpus" || die "writing the seeds failed"

# ---- run -----------------------------------------------------------------------------------------
mkdir -p "$build/logs" "$build/dicts"
rows=()
total_findings=0
for h in "${harnesses[@]}"; do
  findings_dir="$build/findings/$h"
  corpus_dir="$build/corpus-run/$h"
  log="$build/logs/$h.log"
  mkdir -p "$findings_dir" "$corpus_dir"
  if [[ -d "$build/corpus/$h" ]]; then
    cp -n "$build/corpus/$h"/* "$corpus_dir"/ 2>/dev/null || true
  fi

  # The harness names its dictionaries ("// fuzz-dict: json safetensors"): join them.
  dict="$build/dicts/$h.dict"
  : >"$dict"
  for d in $(sed -n 's|^// fuzz-dict: *\([a-z_ ]*\).*|\1|p' "$repo/tests/fuzz/$h.cpp"); do
    [[ -f "$repo/tests/fuzz/$d.dict" ]] || die "$h names a missing dictionary tests/fuzz/$d.dict"
    cat "$repo/tests/fuzz/$d.dict" >>"$dict"
  done
  dict_flag=()
  [[ -s "$dict" ]] && dict_flag=(-dict="$dict")

  stamp="$build/findings/.stamp-$h"
  touch "$stamp"  # artifacts written by this run are newer than the stamp
  echo "fuzz: running $h for ${seconds}s"
  started=$(date +%s.%N)
  set +e
  "$build/$h" -max_total_time="$seconds" -timeout="$input_timeout" \
    -rss_limit_mb=2048 "${dict_flag[@]}" -artifact_prefix="$findings_dir/" \
    -print_final_stats=1 "$corpus_dir" >"$log" 2>&1 &
  pid=$!
  wait "$pid"
  rc=$?
  set -e
  ended=$(date +%s.%N)
  # The harness's scratch folder survives a crash (fuzz_util.h removes it at a normal exit).
  rm -rf "/dev/shm/sf-fuzz-$pid" "${TMPDIR:-/tmp}/sf-fuzz-$pid"

  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  execs=${execs:-0}
  elapsed=$(awk -v a="$started" -v b="$ended" 'BEGIN { printf "%.1f", b - a }')
  rate=$(awk -v n="$execs" -v t="$elapsed" 'BEGIN { printf "%.0f", (t > 0 ? n / t : 0) }')
  found=$(find "$findings_dir" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' -o \
    -name 'timeout-*' -o -name 'oom-*' \) -newer "$stamp" | wc -l)
  rm -f "$stamp"
  if [[ "$found" -eq 0 && "$rc" -ne 0 ]]; then
    found=1  # died without an artifact (e.g. the harness could not start): still a finding
    echo "fuzz: $h exited with status $rc without an artifact; see $log" >&2
  fi
  total_findings=$((total_findings + found))
  rows+=("$h|$execs|$elapsed|$rate|$found")
  if [[ "$found" -gt 0 ]]; then
    echo "fuzz: $h: FINDING (log: $log)"
    grep -m3 -E 'ERROR: |FINDING|runtime error' "$log" | sed 's/^/    /' || true
  fi
done

# ---- report --------------------------------------------------------------------------------------
echo
printf '%-26s | %12s | %8s | %8s | %s\n' harness executions seconds exec/s findings
printf '%-26s-+-%12s-+-%8s-+-%8s-+-%s\n' "$(printf '%.0s-' {1..26})" "$(printf '%.0s-' {1..12})" \
  "$(printf '%.0s-' {1..8})" "$(printf '%.0s-' {1..8})" "--------"
for row in "${rows[@]}"; do
  IFS='|' read -r h execs elapsed rate found <<<"$row"
  printf '%-26s | %12s | %8s | %8s | %s\n' "$h" "$execs" "$elapsed" "$rate" "$found"
done
echo
if [[ "$total_findings" -gt 0 ]]; then
  echo "fuzz: $total_findings finding(s); inputs under $build/findings/, logs under $build/logs/"
  exit 1
fi
echo "fuzz: no findings"

#!/usr/bin/env bash
# readme_examples.sh — runs the example commands of README.md as written, in a fresh temporary
# copy of the working tree, and checks what the README says they produce: the files it names,
# the demo's validation losses, the CPU decode speeds and the durations it states.
#
#   bash scripts/readme_examples.sh [--list] [--quick] [--long] [--keep] [--match SUBSTR]...
#
#   --list           print every command found, its README line(s) and what would happen to it
#                    (run, skip and why); run nothing
#   --quick          also skip the commands the README says take 5 minutes or more (scripts/demo.sh,
#                    the GPT-2-vocabulary training) and the training's resume. A later command
#                    that needs their output runs on a stand-in: the same with 1/30 of the steps
#   --long           also run what takes more than ~10 minutes on 2 cores (the from-scratch build,
#                    scripts/sanitize.sh, `eval --text` of all of Moby-Dick)
#   --match SUBSTR   (also -k SUBSTR, or a bare SUBSTR) only the commands containing SUBSTR, plus
#                    the earlier ones that make their inputs (runs/..., data/...); repeatable
#   --keep           keep the temporary folder (its path is printed) to look at the outputs
#
# The commands are read from README.md itself, so the list cannot drift from it: every ```sh
# block (comment lines dropped, continued lines joined), the `reproduce` column of its tables (a
# `VAR=...`-only span after a command is that command with those variables), and command-like
# `spans` in its prose (starting with bash, ctest, cmake, build/stagformer, ...). A command
# that appears several times runs once. They run in README order in one copy of the tree (git's
# tracked and untracked-but-not-ignored files) under $TMPDIR, with third_party_data/ linked and
# build/ made of links to the checkout's build outputs (build/stagformer copied, a fresh
# Testing/ for ctest), so nothing in the checkout is written; the from-scratch build (--long)
# gets a copy of its own without build/. The test binaries still run in the checkout's build/,
# where CTest registered them.
#
# Skipped, always with the reason: what needs an NVIDIA GPU (--device cuda, -L gpu,
# bench/gpu_*.sh), scripts/setup.sh --twin (installs PyTorch system-wide), thread counts above
# this machine's cores, and without --long what takes more than ~10 minutes here.
# Per command: PASS/FAIL/SKIPPED, seconds, its checks, and on failure the last 20 lines of its
# output; a table of all of them at the end. A check of something the README states exactly (a
# file it creates, a loss to 4 decimals) fails the command; speeds and stated durations differ
# between runs and machines, so they only print WARN beside the README's figure. Last (unless
# --match), every file the README links or names (docs/..., tests/..., configs/..., scripts/...)
# must exist in the tree.
# Exit status: 0 when nothing failed, 1 when a command or a check failed, 2 on a usage error.
# Environment: README_EXAMPLES_TIMEOUT (seconds one command may take, default 2400),
# CMAKE_BUILD_PARALLEL_LEVEL (jobs of a build a command starts, default 2), TMPDIR.
set -euo pipefail
lc_all_given=${LC_ALL+1}
lc_all=${LC_ALL-}
export LC_ALL=C  # for this script's own text handling; the commands get the caller's locale

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readme="$repo/README.md"
timeout_s=${README_EXAMPLES_TIMEOUT:-2400}
jobs=${CMAKE_BUILD_PARALLEL_LEVEL:-2}

usage() { sed -n '5,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit "${1:-2}"; }

list_only=0 quick=0 long=0 keep=0
filters=()
while (($#)); do
  case "$1" in
    --list) list_only=1 ;;
    --quick) quick=1 ;;
    --long) long=1 ;;
    --keep) keep=1 ;;
    -k|--match) [[ $# -ge 2 ]] || usage; filters+=("$2"); shift ;;
    --match=*) filters+=("${1#--match=}") ;;
    -h|--help) usage 0 ;;
    -*) echo "readme_examples: unknown option '$1'" >&2; usage ;;
    *) filters+=("$1") ;;
  esac
  shift
done
[[ -f $readme ]] || { echo "readme_examples: no $readme" >&2; exit 2; }
readme_text=$(<"$readme")  # one snapshot: the README may change while the commands run

# ---- 1. the commands, from README.md -------------------------------------------------------------
# One line per command: README line <TAB> where (sh|table|prose) <TAB> command <TAB> note, the note
# being the comment lines above it (sh), the claim and number cells of its row (table) or its line.
extract() {
  awk '
    function trim(s) { sub(/^[ \t]+/, "", s); sub(/[ \t]+$/, "", s); return s }
    function strip_comment(s,   i, c, q) {   # drops " # ..." outside quotes
      q = ""
      for (i = 1; i <= length(s); i++) {
        c = substr(s, i, 1)
        if (q == "") {
          if (c == "\047" || c == "\"") q = c
          else if (c == "#" && (i == 1 || substr(s, i - 1, 1) ~ /[ \t]/)) return substr(s, 1, i - 1)
        } else if (c == q) q = ""
      }
      return s
    }
    function is_env(t) { return t ~ /^[A-Za-z_][A-Za-z0-9_]*=[^ ]*( +[A-Za-z_][A-Za-z0-9_]*=[^ ]*)* *$/ }
    function is_cmd(t) {
      return t ~ /^([A-Za-z_][A-Za-z0-9_]*=[^ ]* +)*(bash|sh|ctest|cmake|make|python3?|build\/stagformer|\.\/[^ ]+)( |$)/
    }
    function emit(line, kind, cmd, note) {
      gsub(/[ \t]+/, " ", cmd); gsub(/\t/, " ", note)
      print line "\t" kind "\t" trim(cmd) "\t" (note == "" ? "-" : note)
    }
    function spans(s, line, kind, note,   t, prev) {
      prev = ""
      while (match(s, /`[^`]+`/)) {
        t = substr(s, RSTART + 1, RLENGTH - 2); s = substr(s, RSTART + RLENGTH)
        if (is_cmd(t)) { emit(line, kind, t, note); prev = t }
        else if (prev != "" && is_env(t)) emit(line, kind, t " " prev, note)
      }
    }
    /^```/ {
      if (!infence) { infence = 1; lang = trim(substr($0, 4)); comments = ""; cont = "" }
      else infence = 0
      next
    }
    infence {
      if (lang != "sh" && lang != "bash" && lang != "shell") next
      s = $0
      if (cont == "") {
        if (s ~ /^[ \t]*#/) { sub(/^[ \t]*#[ \t]?/, "", s); comments = comments (comments == "" ? "" : " ") s; next }
        if (trim(s) == "") next
        start = NR
      }
      s = strip_comment(s)
      if (s ~ /\\[ \t]*$/) { sub(/\\[ \t]*$/, "", s); cont = cont s " "; next }
      emit(start, "sh", cont s, comments); cont = ""; comments = ""
      next
    }
    /^\|/ {
      n = split($0, cells, "|")
      if (!intable) {           # the header row: which column is "reproduce"
        intable = 1; rcol = 0
        for (i = 2; i <= n; i++) if (trim(cells[i]) == "reproduce") rcol = i
        next
      }
      if ($0 ~ /^\|[-:| ]+$/) next
      if (rcol) spans(cells[rcol], NR, "table", trim(cells[2]) " | " trim(cells[3]))
      next
    }
    { intable = 0; spans($0, NR, "prose", $0) }
  ' <<<"$readme_text"
}

C_CMD=() C_LINES=() C_KIND=() C_NOTE=()
declare -A index_of=()
while IFS=$'\t' read -r line kind cmd note; do
  if [[ -n ${index_of[$cmd]+x} ]]; then
    i=${index_of[$cmd]}
    C_LINES[i]+=",$line"
    [[ $note == - ]] || C_NOTE[i]+=" || $note"
  else
    i=${#C_CMD[@]}
    index_of[$cmd]=$i
    C_CMD[i]=$cmd C_LINES[i]=$line C_KIND[i]=$kind
    C_NOTE[i]=$([[ $note == - ]] || printf '%s' "$note")
  fi
done < <(extract)
n=${#C_CMD[@]}
((n > 0)) || { echo "readme_examples: found no commands in $readme" >&2; exit 1; }

# ---- 2. what each command needs, and what happens to it -------------------------------------------
# The minutes the README says a command takes: "about N minutes" in the comments above it, or on a
# README line naming its script.
stated_minutes() {  # $1 index
  local cmd=${C_CMD[$1]} note=${C_NOTE[$1]} script l
  if [[ $note =~ about\ ([0-9]+)\ minutes ]]; then echo "${BASH_REMATCH[1]}"; return; fi
  if [[ $cmd =~ ((scripts|bench)/[A-Za-z0-9_.-]+\.sh) ]]; then
    script=${BASH_REMATCH[1]}
    while IFS= read -r l; do
      if [[ $l == *"$script"* && $l =~ about\ ([0-9]+)\ minutes ]]; then echo "${BASH_REMATCH[1]}"; return; fi
    done <<<"$readme_text"
  fi
}

# The run or data folder a command writes (prepare/train --out, scripts/demo.sh's OUT_DIR).
makes() {  # $1 command
  local c=$1
  if [[ $c =~ ^build/stagformer\ (prepare|train)\ .*--out\ ([^ ]+) ]]; then echo "${BASH_REMATCH[2]}"
  elif [[ $c =~ scripts/demo\.sh( +([^ ]+))?$ ]]; then echo "${BASH_REMATCH[2]:-runs/demo}"
  fi
}
# The runs/... and data/... paths a command reads (a plot's DIR=label counts as DIR).
needs() {  # $1 command
  local c=$1 made t words
  made=$(makes "$c")
  read -ra words <<<"$c"
  for t in "${words[@]}"; do
    t=${t//\"/} t=${t//\'/} t=${t%%=*}
    [[ $t == runs/* || $t == data/* ]] || continue
    [[ $t == "$made" && $c != *--resume* ]] && continue
    echo "$t"
  done
}

C_ACT=() C_WHY=() C_MAKES=() C_DEPS=() C_MIN=()
for ((i = 0; i < n; i++)); do
  c=${C_CMD[i]} act=run why=""
  C_MIN[i]=$(stated_minutes "$i")
  case "$c" in
    *"--device cuda"*) act=skip why="needs an NVIDIA GPU (--device cuda)" ;;
    *" -L gpu"*) act=skip why="needs an NVIDIA GPU (the CTest label gpu; without one those tests only skip)" ;;
    *bench/gpu_*) act=skip why="needs an NVIDIA GPU (bench/gpu_*.sh runs on the GPU machine, with .devbin/ from scripts/devbin.sh)" ;;
    *"setup.sh --twin"*) act=skip why="installs Debian's PyTorch (python3-torch) system-wide with apt as root" ;;
    *scripts/readme_examples.sh*) act=skip why="this script itself" ;;
    *scripts/sanitize.sh*) act=long why="a second full build with ASan+UBSan, its suite, then scripts/tsan.sh: ~20 minutes on 2 cores (docs/reliability.md: build 726 s, suite 113 s, TSan 188 s)" ;;
    *"cmake --build"*) act=long why="configures and builds everything from scratch (270 steps, CUDA included): over 10 minutes of 2 cores" ;;
    *"stagformer eval "*"--text "*) act=long why="evaluates all of Moby-Dick (318k GPT-2 tokens at ~550 tok/s): ~10 minutes on 2 cores" ;;
  esac
  if [[ $act == run && $c =~ bench/cpu_decode\.sh((\ +[0-9]+)+) ]]; then
    for t in ${BASH_REMATCH[1]}; do
      if ((t > $(nproc))); then
        act=skip why="runs $t threads, more than this machine's $(nproc) cores (its README figures come from a 16-core host)"
        break
      fi
    done
  fi
  if [[ $act == run ]]; then
    if [[ -n ${C_MIN[i]} ]] && ((C_MIN[i] >= 5)); then
      act=quick why="the README says about ${C_MIN[i]} minutes"
    elif [[ $c == *"train --resume"* ]]; then
      act=quick why="continues the training above to a larger --steps (README: as long again)"
    fi
  fi
  C_ACT[i]=$act C_WHY[i]=$why
  C_MAKES[i]=$(makes "$c")
  deps=""
  for p in $(needs "$c"); do
    for ((j = 0; j < i; j++)); do
      m=${C_MAKES[j]}
      [[ -n $m && ($p == "$m" || $p == "$m"/*) ]] && [[ " $deps " != *" $j "* ]] && deps+=" $j"
    done
  done
  C_DEPS[i]=$(tr ' ' '\n' <<<"${deps# }" | sort -n | tr '\n' ' ')
  C_DEPS[i]=${C_DEPS[i]% }
done

# A shorter version of a long command, for the commands after it that need its output (--quick).
stand_in() {  # $1 command
  local c=$1 steps
  if [[ $c == *scripts/demo.sh* ]]; then
    echo "STEPS=10 $c"
  elif [[ $c =~ ^build/stagformer\ train\ .*--steps\ ([0-9]+) ]]; then
    steps=${BASH_REMATCH[1]}
    steps=$((steps / 30 > 2 ? steps / 30 : 2))
    echo "${c/--steps ${BASH_REMATCH[1]}/--steps $steps}"
  fi
}

# Selection: the commands matching a filter, and (transitively) the commands making their inputs.
SEL=() NEEDED=()
for ((i = 0; i < n; i++)); do
  SEL[i]=$((${#filters[@]} == 0)) NEEDED[i]=0
  for f in "${filters[@]}"; do [[ ${C_CMD[i]} == *"$f"* ]] && SEL[i]=1; done
done
for ((i = n - 1; i >= 0; i--)); do
  ((SEL[i])) || continue
  for j in ${C_DEPS[i]}; do SEL[j]=1 NEEDED[j]=1; done
done
selected=0
for ((i = 0; i < n; i++)); do selected=$((selected + SEL[i])); done
((selected > 0)) || { echo "readme_examples: no README command contains ${filters[*]} (--list shows them)" >&2; exit 2; }

# What happens to command i: PLAN is "run", "standin" or "skip", PLAN_WHY the reason.
plan() {  # $1 index
  local i=$1
  PLAN=run PLAN_WHY=${C_WHY[i]}
  case ${C_ACT[i]} in
    skip) PLAN=skip ;;
    long) ((long)) || { PLAN=skip PLAN_WHY+="; --long runs it"; } ;;
    quick)
      if ((quick)); then
        PLAN=skip PLAN_WHY="--quick: $PLAN_WHY"
        if ((NEEDED[i])) && [[ -n $(stand_in "${C_CMD[i]}") ]]; then
          PLAN=standin PLAN_WHY+="; later commands need its output: a stand-in runs"
        fi
      else PLAN_WHY="--quick would skip it: $PLAN_WHY"
      fi ;;
  esac
}

if ((list_only)); then
  printf '%-9s %-8s %-8s %s\n' "line(s)" "from" "plan" "command"
  for ((i = 0; i < n; i++)); do
    ((SEL[i])) || continue
    plan "$i"; p=$PLAN
    printf '%-9s %-8s %-8s %s\n' "${C_LINES[i]}" "${C_KIND[i]}" "$p" "${C_CMD[i]}"
    [[ -z $PLAN_WHY ]] || printf '%28s%s\n' "" "($PLAN_WHY)"
    [[ $p != standin ]] || printf '%28s%s\n' "" "stand-in: $(stand_in "${C_CMD[i]}")"
    [[ -z ${C_DEPS[i]} ]] || printf '%28s%s\n' "" "needs the output of line(s) $(for j in ${C_DEPS[i]}; do printf '%s ' "${C_LINES[j]%%,*}"; done)"
  done
  exit 0
fi

# ---- 3. the temporary copy of the tree ------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/readme_examples.XXXXXX")
cleanup() { if ((keep)); then echo "readme_examples: kept $work"; else rm -rf "$work"; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM

copy_tree() {  # $1 destination: git's files of the working tree (tracked and untracked, not ignored)
  mkdir -p "$1"
  (cd "$repo" && git ls-files -z --cached --others --exclude-standard |
     while IFS= read -r -d '' f; do [[ -e $f || -L $f ]] && printf '%s\0' "$f"; done |
     tar --null -T - -cf -) | tar -C "$1" -xf -
  [[ -d $repo/third_party_data ]] && ln -s "$repo/third_party_data" "$1/third_party_data"
  mkdir -p "$1/.tmp"
}
tree=$work/tree
copy_tree "$tree"
if [[ -d $repo/build ]]; then
  mkdir -p "$tree/build/Testing"
  for e in "$repo"/build/* "$repo"/build/.[!.]*; do
    [[ -e $e ]] || continue
    case ${e##*/} in
      Testing) ;;
      stagformer) cp -p "$e" "$tree/build/stagformer" ;;  # a rebuild in the checkout leaves this one alone
      *) ln -s "$e" "$tree/build/${e##*/}" ;;
    esac
  done
fi
echo "readme_examples: ${n} commands from README.md; running in $tree"
[[ -x $tree/build/stagformer ]] || echo "readme_examples: WARNING: no build/stagformer in the checkout: build first" >&2

# ---- 4. running and checking --------------------------------------------------------------------
RESULT=() SECS=() CHECKS=() WARNS=() EXIT=()
failed=0

# Runs $1 (a command line) in folder $2 with its output in $3; sets RC and DT (seconds).
run_in() {
  local t0=$EPOCHREALTIME
  RC=0
  (cd "$2" && if [[ -n $lc_all_given ]]; then export LC_ALL=$lc_all; else unset LC_ALL; fi &&
     CMAKE_BUILD_PARALLEL_LEVEL=$jobs TMPDIR="$2/.tmp" timeout -k 30 "$timeout_s" bash -c "$1") \
    >"$3" 2>&1 </dev/null || RC=$?
  DT=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
}

# Checks of command i's results: prints "ok ...", "WARN ..." or "MISMATCH ..." lines; returns 1 on
# a mismatch. $2: the folder it ran in, $3: its output, $4: 1 for a stand-in (no README figures),
# $5: the command line that ran (the README's or its stand-in).
check() {
  local i=$1 dir=$2 log=$3 standin=$4 c=$5 note=${C_NOTE[$1]} bad=0 out="" f p m words
  local flat; flat=$(tr '\r' '\n' <"$log")
  ok() { echo "ok: $*"; }
  mismatch() { echo "MISMATCH: $*"; bad=1; }
  warn() { echo "WARN: $*"; }
  # --out of prepare, train, plot: made
  if [[ $c =~ ^build/stagformer\ (prepare|train|plot)\ .*--out\ ([^ ]+) ]]; then
    out=${BASH_REMATCH[2]}
    if [[ -e $dir/$out ]]; then ok "$out written"; else mismatch "--out $out: nothing was written there"; fi
  fi
  case $c in
    "build/stagformer prepare "*)
      compgen -G "$dir/$out/*train*.bin" >/dev/null && compgen -G "$dir/$out/*val*.bin" >/dev/null &&
        ok "train and validation shards (README: train/val split by document)" ||
        mismatch "$out lacks train or val shards (README: train/val split by document)" ;;
    "build/stagformer train "*)
      for f in model.safetensors config.json train.json; do
        [[ -f $dir/$out/$f ]] || mismatch "$out/$f missing (README: MODEL is a run folder, what train writes)"
      done
      if [[ $c =~ --steps\ ([0-9]+) ]]; then
        m=${BASH_REMATCH[1]}
        grep -q "finished after $m steps" <<<"$flat" && ok "finished after $m steps" ||
          mismatch "no 'finished after $m steps' in its output"
        if [[ $c == *--resume* ]]; then
          if [[ $flat =~ (this\ run|segment\ [0-9]+):\ steps\ ([0-9]+)-$m ]] && ((BASH_REMATCH[2] > 1)); then
            ok "continued the run: ${BASH_REMATCH[0]} (README: a larger --steps extends the run)"
          else
            mismatch "did not continue the earlier run up to step $m (README: --resume continues, a larger --steps extends the run)"
          fi
        fi
      fi ;;
    "build/stagformer eval "*"--json"*)
      if awk '/^\{/ { on = 1 } on { print } /^\}/ { on = 0 }' <<<"$flat" |
         python3 -c 'import json, sys; d = json.load(sys.stdin); assert "loss" in d and "perplexity" in d; print("loss %.4f perplexity %.2f" % (d["loss"], d["perplexity"]))' >"$work/json.txt" 2>&1; then
        ok "JSON with $(cat "$work/json.txt") (README: loss and perplexity)"
      else mismatch "no JSON with loss and perplexity on its output"
      fi ;;
    "build/stagformer eval "*)
      grep -Eq 'loss [0-9.]+.*perplexity' <<<"$flat" && ok "$(grep -Eo 'loss [0-9.]+[^,]*, perplexity [0-9.]+' <<<"$flat" | head -1)" ||
        mismatch "no loss and perplexity on its output" ;;
    "build/stagformer generate "*)
      if [[ $c =~ -p\ \"([^\"]*)\" ]]; then
        p=${BASH_REMATCH[1]}
        grep -qF "$p" <<<"$flat" && ok "the prompt and $(wc -c <<<"$flat") bytes of output" || mismatch "its output does not show the prompt '$p'"
      fi ;;
    "build/stagformer info "*)
      for f in "parameters" "depth" "KV cache" "config fields"; do
        grep -q "^$f" <<<"$flat" || mismatch "no '$f' section (README: fields, parameter counts by part, depth, KV-cache sizes)"
      done
      ((bad)) || ok "fields, parameters, depth and KV cache sections" ;;
    "build/stagformer plot "*)
      if [[ -f $dir/$out ]]; then
        grep -q '<svg' "$dir/$out" || mismatch "$out is not an SVG"
        read -ra words <<<"$c"
        for f in "${words[@]}"; do
          [[ $f == *=* && $f != --* ]] || continue
          grep -qF "${f#*=}" "$dir/$out" || mismatch "$out lacks the label '${f#*=}'"
        done
        ((bad)) || ok "an SVG with the labels of its runs"
      fi ;;
    "build/stagformer bench "*)
      for f in staggered sequential baseline; do
        grep -q "^|.*$f" <<<"$flat" || mismatch "no $f row in its table (README: staggered vs sequential vs the equal-depth baseline)"
      done
      ((bad)) || ok "staggered, sequential and baseline rows" ;;
    ctest*)
      if [[ $flat =~ ([0-9]+)%\ tests\ passed,\ ([0-9]+)\ tests?\ failed\ out\ of\ ([0-9]+) ]]; then
        if ((BASH_REMATCH[3] == 0)); then mismatch "no test matched"
        else ok "${BASH_REMATCH[0]}, $(grep -c '(Skipped)$' <<<"$flat" || true) of them skipped"
        fi
        # README: tests that need a GPU carry the label gpu (and skip without one); the twin checks
        # skip without torch. A skipped test neither labelled gpu nor a twin check, or a Cuda test
        # without the label, contradicts it.
        if [[ $c =~ --test-dir\ ([^ ]+) ]]; then
          local gpu_tests unlabelled=() other=()
          gpu_tests=$(cd "$dir" && ctest --test-dir "${BASH_REMATCH[1]}" -N -L gpu | sed -nE 's/^ *Test +#[0-9]+: //p')
          while IFS= read -r t; do
            [[ -n $t ]] && ! grep -qxF "$t" <<<"$gpu_tests" || continue
            if [[ $t == *Cuda* ]]; then unlabelled+=("${t%%  #*}")
            elif [[ $t != *Twin* ]]; then other+=("${t%%  #*}")
            fi
          done < <(sed -nE 's/^[[:space:]]*[0-9]+ - (.*) \(Skipped\)$/\1/p' <<<"$flat")
          ((${#unlabelled[@]} == 0)) ||
            warn "${#unlabelled[@]} skipped tests run CUDA but lack the CTest label gpu (README: tests that need a GPU carry it), e.g. ${unlabelled[0]}, ${unlabelled[-1]}"
          ((${#other[@]} == 0)) ||
            warn "${#other[@]} skipped tests are neither labelled gpu nor twin checks, e.g. ${other[0]}"
        fi
      else mismatch "no CTest summary line"
      fi ;;
    *scripts/tsan.sh*|*scripts/sanitize.sh*)
      if grep -q 'WARNING: ThreadSanitizer\|ERROR: AddressSanitizer\|runtime error:' <<<"$flat"; then
        mismatch "a sanitizer report"
      fi
      if [[ $flat =~ \[\ \ PASSED\ \ \]\ ([0-9]+)\ tests ]]; then ok "${BASH_REMATCH[1]} tests passed, no sanitizer report"
      else mismatch "no '[  PASSED  ]' line from GoogleTest"
      fi ;;
    *scripts/devbin.sh*)
      [[ -x $dir/.devbin/stagformer ]] && ok ".devbin/stagformer packed ($(du -sh "$dir/.devbin" | cut -f1))" ||
        mismatch "no .devbin/stagformer" ;;
    *scripts/demo.sh*)
      # every runs/demo/... file the README names
      for f in $(grep -o '`runs/demo/[^`]*`' <<<"$readme_text" | tr -d '`' | sort -u); do
        [[ -e $dir/$f ]] && ok "$f written" || mismatch "$f not written (README names it)"
      done
      grep -q '^Call me Ishmael' <<<"$flat" && ok "generated text" ||
        mismatch "no generated text (README: generates text with the StagFormer)"
      grep -q 'speed-up tg.*staggered / baseline' <<<"$flat" && ok "ends with the decode speed against the baseline" ||
        mismatch "no decode speed against the baseline at its end (README: ends with the decode speed)"
      if ((!standin)); then
        # The trainer takes fewer threads when cores are busy, and a CPU run's numbers depend on
        # the thread count (the README's are from 2 threads): then a different loss only warns.
        local fewer_threads=0
        if grep -q 'busy with other work' <<<"$flat"; then
          fewer_threads=1
          warn "trained with fewer threads than cores (other work was running): its losses depend on the thread count"
        fi
        if [[ $note =~ validation\ loss\ ([0-9.]+)\ \(StagFormer[^\)]*\)\ vs\ ([0-9.]+)\ \([^\)]*baseline\)\ vs\ ([0-9.]+)\ \(unigram\) ]]; then
          local -A want=([stagformer]=${BASH_REMATCH[1]} [baseline]=${BASH_REMATCH[2]} [unigram]=${BASH_REMATCH[3]})
          for m in stagformer baseline unigram; do
            f=$(awk -F'|' -v m="$m" '{ g = $2; gsub(/ /, "", g) } g ~ "^" m { gsub(/ /, "", $4); print $4 }' "$dir/runs/demo/summary.md" 2>/dev/null | head -1)
            if [[ -z $f ]]; then mismatch "no $m row in runs/demo/summary.md"
            elif [[ $f == "${want[$m]}" ]]; then ok "validation loss $m $f = README"
            elif ((fewer_threads)); then warn "validation loss $m: $f, README ${want[$m]} (trained with fewer threads)"
            else mismatch "validation loss $m: $f, README ${want[$m]}"
            fi
          done
        else warn "could not read the demo's losses from the README's table"
        fi
      fi ;;
    *bench/cpu_decode.sh*)
      f=$(ls -t "$dir"/bench/results/cpu-decode-*.md 2>/dev/null | head -1)
      if [[ -z $f || $f -ot $log.start ]]; then mismatch "no new bench/results/cpu-decode-*.md"
      else
        ok "wrote bench/results/${f##*/}"
        if ((!standin)) && [[ $note =~ staggered\ ([0-9.]+)\ ±\ ([0-9.]+)\ tok/s\ =\ sequential\ ([0-9.]+)\ ±\ ([0-9.]+) ]]; then
          local -A readme_tps=([staggered]=${BASH_REMATCH[1]} [sequential]=${BASH_REMATCH[3]})
          local -A got=()
          for m in staggered sequential; do
            got[$m]=$(awk -F'|' -v m="$m" '$2 ~ /stagformer/ && $7 ~ m && $8 ~ /tg/ { split($9, a, "±"); gsub(/ /, "", a[1]); print a[1]; exit }' "$f")
            p=$(awk -v a="${got[$m]:-0}" -v b="${readme_tps[$m]}" 'BEGIN { printf "%+.0f", (a / b - 1) * 100 }')
            if [[ -z ${got[$m]} ]]; then mismatch "no $m tg row in ${f##*/}"
            elif ((${p#+} > 20 || ${p#+} < -20)); then warn "$m ${got[$m]} tok/s, README ${readme_tps[$m]} ($p%)"
            else ok "$m ${got[$m]} tok/s, README ${readme_tps[$m]} ($p%)"
            fi
          done
          if [[ -n ${got[staggered]} && -n ${got[sequential]} ]]; then
            p=$(awk -v a="${got[staggered]}" -v b="${got[sequential]}" 'BEGIN { printf "%.2f", a / b }')
            awk -v r="$p" 'BEGIN { exit !(r >= 0.9 && r <= 1.1) }' && ok "staggered/sequential $p (README: equal)" ||
              warn "staggered/sequential $p (README: staggered = sequential)"
          fi
          if [[ $note =~ at\ ([0-9]+)%\ of\ the\ measured\ peak ]]; then
            m=${BASH_REMATCH[1]}
            p=$(grep -Eo 'stagformer[^:]*(staggered|sequential): [0-9.]+ ± [0-9.]+ GB/s = [0-9.]+%' "$f" | grep -Eo '[0-9.]+%' | tr '\n' ' ')
            warn_or_ok=ok
            for t in $p; do t=${t%\%}; awk -v a="$t" -v b="$m" 'BEGIN { exit !(a - b > 10 || b - a > 10) }' && warn_or_ok=warn; done
            $warn_or_ok "bandwidth ${p:-?}of the measured peak (README: both at $m%)"
          fi
        fi
      fi ;;
  esac
  # how long the README says it takes
  if ((!standin)) && [[ -n ${C_MIN[i]} ]]; then
    m=$((C_MIN[i] * 60))
    if ((DT > m * 3 / 2 + 60 || DT < m * 2 / 3 - 60)); then warn "took $((DT / 60)) min $((DT % 60)) s; the README says about ${C_MIN[i]} minutes"
    else ok "took $((DT / 60)) min $((DT % 60)) s (README: about ${C_MIN[i]} minutes)"
    fi
  fi
  return $bad
}

# Runs command line $2 for entry $1 (itself or its stand-in, $3 = 1) and reports; sets STATUS.
execute() {
  local i=$1 cmd=$2 standin=$3 dir=$tree log checks l tag=""
  ((standin)) && tag=" (stand-in)"
  log="$work/log.$i${tag:+.standin}"
  if [[ $cmd == *"cmake -S"* || $cmd == *"cmake --build"* ]]; then   # a build from scratch: its own copy
    dir=$work/tree-build-$i
    copy_tree "$dir"
  fi
  : >"$log.start"
  run_in "$cmd" "$dir" "$log"
  STATUS=PASS
  checks=$(check "$i" "$dir" "$log" "$standin" "$cmd") || STATUS=FAIL
  if ((RC != 0)); then
    STATUS=FAIL
    l="exit status $RC"
    ((RC == 124 || RC == 137)) && l+=" (timed out after $timeout_s s)"
    checks="$l"$'\n'"$checks"
  fi
  printf '        %s  %s s%s\n' "$STATUS" "$DT" "$tag"
  [[ -z $checks ]] || sed 's/^/          /' <<<"$checks"
  while IFS= read -r l; do
    if [[ $l == WARN:* || $l == MISMATCH:* || $l == exit* ]]; then
      WARNS+=("line ${C_LINES[i]}$tag: $l")
    fi
  done <<<"$checks"
  if [[ $STATUS == FAIL ]]; then
    echo "        -- last 20 lines of its output:"
    tr '\r' '\n' <"$log" | grep -v '^$' | tail -20 | sed 's/^/        | /'
    failed=1
  fi
}

count=0 total=$selected
for ((i = 0; i < n; i++)); do
  ((SEL[i])) || continue
  count=$((count + 1))
  printf '\n[%d/%d] README line %s: %s\n' "$count" "$total" "${C_LINES[i]}" "${C_CMD[i]}"
  plan "$i"; p=$PLAN
  SECS[i]=-
  missing=""
  for j in ${C_DEPS[i]}; do  # its inputs: made when the command that makes them exited with 0
    [[ ${EXIT[j]:-} == 0 ]] || missing+="${missing:+, }line ${C_LINES[j]%%,*} (${RESULT[j]:-not run})"
  done
  if [[ $p == skip ]]; then
    RESULT[i]=SKIPPED CHECKS[i]=$PLAN_WHY
    echo "        SKIPPED: $PLAN_WHY"
  elif [[ -n $missing ]]; then
    RESULT[i]=SKIPPED CHECKS[i]="needs the output of $missing"
    echo "        SKIPPED: ${CHECKS[i]}"
  elif [[ $p == standin ]]; then
    echo "        SKIPPED: $PLAN_WHY"
    s=$(stand_in "${C_CMD[i]}")
    echo "        stand-in: $s"
    execute "$i" "$s" 1
    RESULT[i]="$STATUS (stand-in)" SECS[i]=$DT EXIT[i]=$RC CHECKS[i]="skipped (${C_WHY[i]}); stand-in: $s"
  else
    execute "$i" "${C_CMD[i]}" 0
    RESULT[i]=$STATUS SECS[i]=$DT EXIT[i]=$RC
  fi
done

# ---- 5. the files the README names ------------------------------------------------------------------
# Links, `dir/file` spans and the configs and scripts its commands use must exist in the tree.
if ((${#filters[@]} == 0)); then
  echo
  echo "[paths] README links and file names"
  path_missing=0
  lineno=0
  while IFS= read -r l; do
    lineno=$((lineno + 1))
    while IFS= read -r t; do
      [[ -n $t ]] || continue
      t=${t#](} t=${t%)} t=${t%#} t=${t//\`/}
      [[ $t == http* ]] && continue
      if [[ ! -e $tree/$t ]]; then
        echo "        MISSING line $lineno: $t"
        WARNS+=("line $lineno: MISSING: $t (named in the README, not in the tree)")
        path_missing=1
      fi
    done < <(grep -Eo '\]\([^)#]+[)#]|`(\.ci|bench|configs|docs|python|scripts|src|tests|tools)/[^` ]*`|(configs|scripts|bench)/[A-Za-z0-9_./-]+\.(json|sh)' <<<"$l" || true)
  done <<<"$readme_text"
  if ((path_missing)); then failed=1; echo "        FAIL"; else echo "        PASS: every file the README names exists"; fi
fi

# ---- 6. summary ------------------------------------------------------------------------------------
echo
mode=""
((quick)) && mode+=", --quick"
((long)) && mode+=", --long"
echo "== summary (README.md, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores$mode)"
printf '%-17s %6s  %-9s %s\n' result seconds "line(s)" command
for ((i = 0; i < n; i++)); do
  ((SEL[i])) || continue
  printf '%-17s %6s  %-9s %s\n' "${RESULT[i]}" "${SECS[i]}" "${C_LINES[i]}" "${C_CMD[i]}"
  [[ ${RESULT[i]} != SKIPPED* && ${RESULT[i]} != *stand-in* ]] || printf '%35s(%s)\n' "" "${CHECKS[i]}"
done
if ((${#WARNS[@]})); then
  echo
  echo "== mismatches and warnings"
  printf '%s\n' "${WARNS[@]}"
fi
exit $failed

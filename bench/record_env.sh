# record_env.sh — sourced by the CPU benchmark scripts (bench/cpu_decode.sh,
# bench/serve/serve_load.sh): what a result record says about its run. Sets `commit` (COMMIT,
# else git's HEAD, noting uncommitted changes), `date_utc`, `cpu` and `memory`. Needs $root,
# the repository's folder.
if [[ -n "${COMMIT:-}" ]]; then
  commit=$COMMIT
elif git -C "$root" rev-parse --short HEAD >/dev/null 2>&1; then
  commit=$(git -C "$root" rev-parse --short HEAD)
  if [[ -n "$(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
    commit="$commit (with uncommitted changes)"
  fi
else
  commit="unknown (no .git here; set COMMIT)"
fi
date_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)
cpu=$(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | sed 's/^[^:]*: *//' || true)
cpu=${cpu:-unknown CPU}
memory=$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo 2>/dev/null || echo "unknown")

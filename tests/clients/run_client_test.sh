#!/usr/bin/env bash
# run_client_test.sh — one client this project did not write, run against a real `stagformer serve`.
#
#   bash tests/clients/run_client_test.sh STAGFORMER_BIN openai|browser [ARTIFACT_DIR]
#
#   openai   the official `openai` npm package: completions, streamed chat, errors (openai_client_test.mjs)
#   browser  headless Chromium (Debian's, driven by puppeteer-core) uses the page at /
#            (browser_page_test.mjs); its screenshot goes to ARTIFACT_DIR/serve-page.png
#
# Makes a tiny byte-level model in a temporary folder (`prepare` of docs/, 2 training steps: the
# quality of its text does not matter, that a seed or temperature 0 gives the same text twice
# does), starts `serve --port 0` with an API key, reads the address it prints, runs the client,
# then stops the server with SIGTERM and requires it to exit 0 (it drains and stops cleanly).
# Registered with CTest by client_tests.cmake. The npm packages come from scripts/setup.sh.
set -euo pipefail

if (($# < 2)); then
  sed -n '4,9p' "$0" >&2
  exit 2
fi
bin=$1
client=$2
artifacts=${3:-}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

fail() {
  echo "client test '$client': FAIL: $*" >&2
  exit 1
}

case "$client" in
  openai) script=openai_client_test.mjs ;;
  browser) script=browser_page_test.mjs ;;
  *) fail "unknown client (expected openai or browser)" ;;
esac

# ---- what the test needs: node 18+, the npm packages, Chromium ----
command -v node >/dev/null || fail "node is not installed: run 'bash scripts/setup.sh'"
node_major=$(node -p 'process.versions.node.split(".")[0]')
((node_major >= 18)) || fail "node $(node --version) is too old (18 or later): run 'bash scripts/setup.sh'"
for package in openai puppeteer-core; do
  [ -f "$here/node_modules/$package/package.json" ] ||
    fail "the npm package '$package' is missing from tests/clients/node_modules: run 'bash scripts/setup.sh'"
done
chromium=${SF_CHROMIUM:-/usr/bin/chromium}
if [ "$client" = browser ]; then
  [ -x "$chromium" ] || fail "no Chromium at $chromium (Debian package chromium): run 'bash scripts/setup.sh'"
fi
[ -x "$bin" ] || fail "no stagformer binary at '$bin'"

work=$(mktemp -d "${TMPDIR:-/tmp}/sf_client_${client}.XXXXXX")
server_pid=""
cleanup() {
  # Only a server that the checks below did not already stop (a failure on the way).
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then kill -KILL "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
server_log() {
  echo "---- the server's log ($work/serve.log) ----" >&2
  tail -n 40 "$work/serve.log" >&2 || true
}

# ---- the model: byte tokenizer, the demo config with room for long replies (the Stop test) ----
"$bin" prepare --tokenizer byte --val-fraction 0 --no-progress -t 1 --out "$work/data" "$root/docs" \
  >"$work/prepare.log" 2>&1 || { cat "$work/prepare.log" >&2; fail "stagformer prepare failed"; }
"$bin" train --config "$root/configs/demo-stagformer.json" --set max_seq_len=1024 --data "$work/data" \
  --out "$work/model" --steps 2 --batch 2 --seq 64 --eval-every 0 --no-progress -t 1 \
  >"$work/train.log" 2>&1 || { cat "$work/train.log" >&2; fail "stagformer train failed"; }

# ---- the server: any free port, which it prints ("serve: NAME on http://HOST:PORT (...") ----
api_key="sf-client-test-$RANDOM$RANDOM"
model_name=tiny-client-test
"$bin" serve -m "$work/model" --port 0 --slots 2 -t 1 --name "$model_name" --api-key "$api_key" \
  2>"$work/serve.log" &
server_pid=$!
base_url=""
for _ in $(seq 300); do
  base_url=$(grep -o -m1 'on http://[^ ]*:[0-9]*' "$work/serve.log" | sed 's/^on //' || true)
  [ -n "$base_url" ] && break
  kill -0 "$server_pid" 2>/dev/null || { server_log; fail "stagformer serve exited before listening"; }
  sleep 0.1
done
[ -n "$base_url" ] || { server_log; fail "stagformer serve printed no address within 30 s"; }
echo "client test '$client': server at $base_url (pid $server_pid)"

# ---- the client (the scripts wait for /health themselves); its own limit below CTest's ----
client_rc=0
SF_BASE_URL=$base_url SF_API_KEY=$api_key SF_MODEL_NAME=$model_name SF_CHROMIUM=$chromium \
  SF_ARTIFACTS=$artifacts timeout 100 node "$here/$script" || client_rc=$?

# ---- stop: SIGTERM drains and exits 0 ----
kill -TERM "$server_pid"
for _ in $(seq 300); do
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$server_pid" 2>/dev/null && { server_log; fail "stagformer serve did not stop within 30 s of SIGTERM"; }
server_rc=0
wait "$server_pid" || server_rc=$?
server_pid=""

if ((client_rc != 0)); then
  server_log
  ((client_rc == 124)) && fail "$script ran past its 100 s limit"
  fail "$script failed (exit $client_rc)"
fi
((server_rc == 0)) || { server_log; fail "stagformer serve exited $server_rc after SIGTERM (expected 0)"; }
grep -q '^serve: stopped' "$work/serve.log" || { server_log; fail "stagformer serve did not log 'serve: stopped'"; }
echo "client test '$client': PASS (the server drained and exited 0 on SIGTERM)"

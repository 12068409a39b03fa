#!/usr/bin/env bash
# Installs every Debian package that building and testing stagformer needs.
# Idempotent: packages already present are left alone. Run as root (or with sudo available).
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libopenblas-dev        # CPU matrix products (cblas_sgemm / cblas_dgemm)
  nlohmann-json3-dev     # config.json and safetensors headers
  libcli11-dev           # command-line parsing
  libfmt-dev             # formatting
  libgtest-dev libgmock-dev googletest  # tests
  libpcre2-dev           # GPT-2 pre-tokenisation regex (Unicode classes)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  sudo_cmd=""
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
  echo "setup: installing ${missing[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all Debian packages present"
fi

# ---- data files (tokenizer ranks, demo corpus) ----
bash "$(dirname "$0")/fetch_data.sh"

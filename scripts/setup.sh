#!/usr/bin/env bash
# Installs every Debian package that building and testing stagformer needs, and the npm packages
# of the client tests (tests/clients/: the openai package, puppeteer-core driving Chromium).
# Idempotent: packages already present are left alone. Run as root (or with sudo available).
set -euo pipefail
#
# Options:
#   --twin   also install Debian's PyTorch and NumPy (python3-torch, python3-numpy) for the
#            PyTorch twin on the CPU (python/: twin_check.py, twin_decode.py). Optional: the
#            default run (what CI runs) does not install them, and the tests that need torch skip.

with_twin=0
for arg in "$@"; do
  case "$arg" in
    --twin) with_twin=1 ;;
    -h|--help) sed -n '2,4p;6,10p' "$0"; exit 0 ;;
    *) echo "setup: unknown option '$arg' (expected --twin)" >&2; exit 2 ;;
  esac
done

packages=(
  build-essential cmake ninja-build pkg-config git
  libopenblas-dev        # CPU matrix products (cblas_sgemm / cblas_dgemm)
  libopenblas-openmp-dev # its OpenMP build, which the build links: one thread pool with ours
  nlohmann-json3-dev     # config.json and safetensors headers
  libcli11-dev           # command-line parsing
  libfmt-dev             # formatting
  libgtest-dev libgmock-dev googletest  # tests
  libpcre2-dev           # GPT-2 pre-tokenisation regex (Unicode classes)
  libcpp-httplib-dev     # `stagformer serve`: the HTTP server (docs/serving.md says why this one)
  clang-14 libclang-rt-14-dev libomp-14-dev llvm-14  # scripts/fuzz.sh: libFuzzer + ASan/UBSan
                                                     # runtimes, OpenMP for clang, llvm-symbolizer
  chromium               # tests/clients: the page at / in a headless browser
)
# tests/clients also need Node.js 18 or later with npm. Debian's nodejs + npm unless a node is
# already there: a NodeSource nodejs (which bundles npm) conflicts with Debian's npm package.
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if ((node_major < 18)) || ! command -v npm >/dev/null; then
  packages+=(nodejs npm)
fi
if ((with_twin)); then
  packages+=(python3-torch python3-numpy)  # --twin: the PyTorch twin on the CPU (torch 1.13)
fi

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

if ((with_twin)); then
  # Debian's torch lives in /usr/lib/python3/dist-packages: visible to /usr/bin/python3, not to
  # a python3 from pyenv/conda/venv earlier on PATH (point SF_PYTHON at /usr/bin/python3 then).
  if /usr/bin/python3 -c "import torch" 2>/dev/null; then
    echo "setup: twin: $(/usr/bin/python3 -c 'import torch; print("torch", torch.__version__)') for /usr/bin/python3"
  else
    echo "setup: twin: /usr/bin/python3 cannot import torch" >&2
  fi
fi

# ---- npm packages of the client tests, pinned by tests/clients/package-lock.json ----
# Into tests/clients/node_modules (git-ignored), where the tests' scripts find them. `npm ci`
# reinstalls from scratch, so it runs only when the lock file changed since the last install
# (a stamp of its hash). PUPPETEER_SKIP_DOWNLOAD: the tests drive Debian's chromium, not a
# browser of puppeteer's own; --ignore-scripts: no package runs code at install.
clients="$(cd "$(dirname "$0")/../tests/clients" && pwd)"
stamp="$clients/node_modules/.setup-stamp"
want="$(sha256sum "$clients/package-lock.json" | cut -d' ' -f1) node $(node --version)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup: npm packages of tests/clients present"
else
  echo "setup: installing the npm packages of tests/clients (npm ci)"
  (cd "$clients" && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
fi

# ---- data files (tokenizer ranks, demo corpus) ----
bash "$(dirname "$0")/fetch_data.sh"

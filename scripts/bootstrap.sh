#!/usr/bin/env bash
# Installs everything skiff needs to build and test: Debian packages, then the server tests'
# npm dependencies (tests/server: the official openai SDK, pinned by its package-lock.json).
# Idempotent and quiet: does nothing when everything is already present.
set -euo pipefail

packages=(
  build-essential cmake clang libclang-rt-14-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev nlohmann-json3-dev libcpp-httplib-dev libfmt-dev liburing-dev pkg-config
  libhnswlib-dev  # approximate nearest neighbours for large memory stores (src/memory/ann.cpp)
  python3 python3-numpy python3-torch python3-jinja2
  nodejs    # tests/server: the official OpenAI Node SDK against skiff serve
  chromium  # tests/cli/test_chat_page.py drives the chat page headless
  libopenmpi-dev openmpi-bin  # pipeline stages (src/dist/, tests/cli/test_mpi_pipeline.py)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm: Debian's package, unless the installed nodejs bundles it (NodeSource's does, and
# conflicts with Debian's npm).
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  # apt's chatter (debconf notices and the like) goes to a log that is shown only on failure.
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
      >"$log" 2>&1; then
    cat "$log" >&2
    echo "bootstrap: apt-get failed" >&2
    exit 1
  fi
fi

# tests/server/node_modules exactly as package-lock.json pins it (npm ci), unless the pinned
# openai version is already installed there.
cd "$(dirname "${BASH_SOURCE[0]}")/../tests/server"
want=$(node -p 'require("./package.json").dependencies.openai')
have=$(node -p 'require("./node_modules/openai/package.json").version' 2>/dev/null || true)
if [ "$have" != "$want" ]; then
  echo "bootstrap: npm ci in tests/server (openai $want)" >&2
  npm ci --silent --no-audit --no-fund >/dev/null
fi

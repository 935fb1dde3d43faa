#!/usr/bin/env bash
# Installs everything skiff needs to build and test, from Debian packages only.
# Idempotent and quiet: does nothing when every package is already present.
set -euo pipefail

packages=(
  build-essential cmake clang libclang-rt-14-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev nlohmann-json3-dev libcpp-httplib-dev libfmt-dev liburing-dev pkg-config
  python3 python3-numpy python3-torch python3-jinja2
  chromium  # tests/cli/test_chat_page.py drives the chat page headless
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

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

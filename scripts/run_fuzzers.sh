#!/usr/bin/env bash
# Runs every libFuzzer target in BUILD (build-asan/fuzz_*) for FUZZ_SECONDS each, JOBS of them
# at a time, each on its corpus folder plus fuzz/seeds/<name>. A crash prints the end of that
# fuzzer's log and fails the run. Usage: scripts/run_fuzzers.sh BUILD [JOBS]
set -euo pipefail
build=$1
jobs=${2:-1}
export FUZZ_SECONDS=${FUZZ_SECONDS:-15} FUZZ_BUILD=$build
mkdir -p "$build/fuzz"

run_one() {
  local f=$1 name
  name=$(basename "$f")
  mkdir -p "$FUZZ_BUILD/fuzz/corpus/$name"
  echo "fuzz: $name for ${FUZZ_SECONDS}s"
  if ! "$f" -max_total_time="$FUZZ_SECONDS" -max_len=65536 "$FUZZ_BUILD/fuzz/corpus/$name" "fuzz/seeds/$name" \
      2>"$FUZZ_BUILD/fuzz/$name.log"; then
    echo "fuzz: $name FAILED"
    tail -50 "$FUZZ_BUILD/fuzz/$name.log"
    return 1
  fi
}
export -f run_one

ls "$build"/fuzz_* | xargs -P "$jobs" -I{} bash -c 'run_one "$1"' _ {}

#!/bin/bash
# Interleaved A/B of skiff builds on one model: runs `skiff bench -r 1 -o json` with each
# binary in turn, ROUNDS times, and prints the median (and range) per test and binary. The
# machine is shared and noisy, so compare builds only this way, never across separate runs.
#
#   bench/ab.sh ROUNDS MODEL "BENCH ARGS" BIN1 BIN2 [...]
#   bench/ab.sh 5 tl-q4_0.gguf "-p 128 -n 64 -t 2" /tmp/skiff-before build/skiff
set -euo pipefail
if [ $# -lt 4 ]; then
  sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
rounds=$1 model=$2 args=$3
shift 3
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for i in $(seq "$rounds"); do
  for j in $(seq $#); do
    bin=${!j}
    # shellcheck disable=SC2086
    "$bin" bench -m "$model" $args -r 1 --no-membw -o json 2>/dev/null > "$out/$j.$i.json"
  done
done
for j in $(seq $#); do
  /usr/bin/python3 - "${!j}" "$out/$j".*.json <<'PY'
import json, statistics, sys
name = sys.argv[1]
runs = [json.load(open(path)) for path in sys.argv[2:]]
by_test = {}
for run in runs:
    for row in run:
        by_test.setdefault(row["test"], []).append(row["avg_ts"])
print(name, " | ".join(f"{t} median {statistics.median(v):.1f} [{min(v):.1f}..{max(v):.1f}] n={len(v)}"
                       for t, v in by_test.items()))
PY
done

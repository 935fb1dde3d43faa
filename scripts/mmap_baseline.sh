#!/usr/bin/env bash
# The page-cache baseline of LLM in a Flash: decode with the plain GGUF memory-mapped while a
# cgroup caps the process's memory (page cache included) at the flash run's budget, so both
# approaches are compared at the same memory. Needs root (cgroup v2 memory.max/swap.max, or
# v1 memory.limit_in_bytes/memsw) and drops the page cache first.
#
#   scripts/mmap_baseline.sh MODEL.gguf BUDGET [TOKENS] [THREADS]
#   BUDGET: bytes, or with a K/M/G suffix, or N% of MODEL.gguf's size
#
# Prints skiff bench's JSON (tg = tokens/s under the limit) plus the limit used. With
# LLAMA_BENCH=/path/to/llama-bench (../shared/peers/build-llamacpp.sh builds it) it then drops
# the page cache again and runs llama.cpp's llama-bench on the same file, same tests and
# threads, in the same cgroup: what users of llama.cpp get at that memory.
set -euo pipefail

model=${1:?usage: mmap_baseline.sh MODEL.gguf BUDGET [TOKENS] [THREADS]}
budget=${2:?usage: mmap_baseline.sh MODEL.gguf BUDGET [TOKENS] [THREADS]}
tokens=${3:-4}
threads=${4:-2}
skiff=${SKIFF:-$(dirname "$0")/../build/skiff}
# The baseline is the plain mapping: no packed copies of Q4_0 / Q8_0 weights (anonymous
# memory, which the cgroup could not evict; skiff also skips them when they would not fit).
export SKIFF_PACK=0

size=$(stat -c %s "$model")
case "$budget" in
  *%) limit=$(( size * ${budget%\%} / 100 )) ;;
  *[kK]) limit=$(( ${budget%?} * 1024 )) ;;
  *[mM]) limit=$(( ${budget%?} * 1024 * 1024 )) ;;
  *[gG]) limit=$(( ${budget%?} * 1024 * 1024 * 1024 )) ;;
  *) limit=$budget ;;
esac

name=skiff-mmap-$$
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then  # cgroup v2
  cg=/sys/fs/cgroup/$name
  mkdir "$cg"
  echo "$limit" > "$cg/memory.max"
  echo 0 > "$cg/memory.swap.max" 2>/dev/null || true
else  # cgroup v1
  cg=/sys/fs/cgroup/memory/$name
  mkdir "$cg"
  echo "$limit" > "$cg/memory.limit_in_bytes"
  echo "$limit" > "$cg/memory.memsw.limit_in_bytes" 2>/dev/null || true  # no swap beyond the limit
fi
trap 'rmdir "$cg" 2>/dev/null || true' EXIT

sync
echo 3 > /proc/sys/vm/drop_caches
echo "mmap baseline: $model ($size bytes) under a $limit-byte memory limit ($cg)" >&2
# The child joins the cgroup before exec, so every page it maps is charged there.
in_cgroup() { sh -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' _ "$cg" "$@"; }
in_cgroup "$skiff" bench -m "$model" -p 8 -n "$tokens" -r 1 -t "$threads" --no-membw -o json

if [ -n "${LLAMA_BENCH:-}" ]; then
  sync
  echo 3 > /proc/sys/vm/drop_caches
  echo "llama.cpp mmap baseline: $LLAMA_BENCH under the same $limit-byte limit" >&2
  # --poll 0: ggml's spinning workers would take the cores skiff's run did not (see
  # docs/SPECULATIVE.md); llama-bench, like skiff bench, warms up once before the timed run.
  in_cgroup "$LLAMA_BENCH" -m "$model" -p 8 -n "$tokens" -r 1 -t "$threads" --poll 0 -o json
fi

#!/usr/bin/env bash
# The issue-3 comparison: skiff bench on the reference shape (random weights from skiff synth)
# in Q4_0, Q8_0 and F16 (F16 also with --no-mmap), and on stories260K (models/, F32), 2
# threads, next to llama.cpp's numbers measured on this machine kind (commit c392e50,
# -DGGML_NATIVE=ON, 2 threads). The machine is shared: compare medians of several runs.
# Usage: bench/compare_llamacpp.sh [build-dir] [model-dir]   (models are made once, ~2.9 GB)
set -euo pipefail
build=${1:-build}
dir=${2:-/tmp/skiff-bench-models}
skiff="$build/skiff"
mkdir -p "$dir"
for t in q4_0 q8_0 f16; do
  [ -f "$dir/tinyllama-$t.gguf" ] || "$skiff" synth -o "$dir/tinyllama-$t.gguf" --shape tinyllama --type "$t" 2>/dev/null
done
echo "load before: $(uptime)"
"$skiff" bench --membw -t 2
"$skiff" bench --membw -t 1
for t in q4_0 q8_0 f16; do
  "$skiff" bench -m "$dir/tinyllama-$t.gguf" -p 128 -n 64 -r 3 -t 2
done
"$skiff" bench -m "$dir/tinyllama-f16.gguf" --no-mmap -p 128 -n 64 -r 3 -t 2
"$skiff" bench -m "$(dirname "$0")/../models/stories260K.gguf" -p 64 -n 32 -r 5 -t 2
echo "load after: $(uptime)"
cat <<'TABLE'

llama.cpp on this machine kind (2 threads):
| file | pp t/s | tg t/s |
|---|---|---|
| Q4_0 | 194 (pp128) | 55 (tg64) |
| Q8_0 | 136 (pp128) | 33 (tg64) |
| F16 | 171 (pp128) | 26 (tg64) |
| stories260K F32 | 21000 (pp64) | 2100 (tg32) |
TABLE

#!/usr/bin/env bash
# Tokenizer speed: ~1 MB of English text with the Llama 3 vocabulary, skiff next to
# llama.cpp's llama-tokenize (when the peer build exists), rounds alternated, medians.
# Both are timed as whole processes on the text and on a one-byte text; the difference is the
# tokenization alone (vocabulary loading cancels out). skiff's in-process --bench number (no
# process, no output) is printed too. The machine is shared: read medians, not single runs.
# Usage: bench/tokenize_speed.sh [build-dir] [rounds]
set -euo pipefail
build=${1:-build}
rounds=${2:-5}
here=$(cd "$(dirname "$0")/.." && pwd)
shared=${SKIFF_SHARED:-$here/../shared}
vocab=$shared/models/vocab/ggml-vocab-llama-bpe.gguf
peer=${LLAMA_TOKENIZE:-$HOME/.cache/skiff-peers/llama.cpp-c392e50/build/bin/llama-tokenize}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
head -c 1000000 "$shared/data/tinystories_train_lowercase.txt" > "$tmp/text.txt"
printf 'a' > "$tmp/tiny.txt"
bytes=$(wc -c < "$tmp/text.txt")

seconds() {  # wall seconds of one run of "$@", output discarded
  local start end
  start=$(date +%s.%N)
  "$@" > /dev/null 2>&1
  end=$(date +%s.%N)
  echo "$end - $start" | bc -l
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

skiff_cmd=("$build/skiff" tokenize -m "$vocab" --no-bos --no-parse-special -f)
peer_cmd=("$peer" -m "$vocab" --ids --no-bos --no-parse-special --log-disable --no-escape -f)
have_peer=0
if [ -x "$peer" ]; then
  have_peer=1
  export LD_LIBRARY_PATH="$(dirname "$peer"):${LD_LIBRARY_PATH:-}"
  # Same ids, or the speeds mean nothing.
  ids() { tr -s ' ,[]\n' '\n' | grep -v '^$' || true; }
  "${skiff_cmd[@]}" "$tmp/text.txt" | ids > "$tmp/skiff.ids"
  "${peer_cmd[@]}" "$tmp/text.txt" 2>/dev/null | ids > "$tmp/peer.ids"
  if ! cmp -s "$tmp/skiff.ids" "$tmp/peer.ids"; then
    echo "warning: skiff and llama-tokenize disagree on the ids" >&2
  else
    echo "skiff and llama-tokenize give the same $(wc -l < "$tmp/skiff.ids") ids"
  fi
fi

: > "$tmp/skiff"; : > "$tmp/peer"
for ((r = 0; r < rounds; ++r)); do
  full=$(seconds "${skiff_cmd[@]}" "$tmp/text.txt"); base=$(seconds "${skiff_cmd[@]}" "$tmp/tiny.txt")
  echo "$full - $base" | bc -l >> "$tmp/skiff"
  if [ $have_peer = 1 ]; then
    full=$(seconds "${peer_cmd[@]}" "$tmp/text.txt"); base=$(seconds "${peer_cmd[@]}" "$tmp/tiny.txt")
    echo "$full - $base" | bc -l >> "$tmp/peer"
  fi
done

echo "text: first $bytes bytes of tinystories_train_lowercase.txt, vocabulary: Llama 3 ($vocab), $rounds rounds"
echo "load: $(uptime | sed 's/.*load/load/')"
echo
echo "| tokenizer | median s (process, minus load) | MB/s |"
echo "|---|---:|---:|"
s=$(median < "$tmp/skiff")
printf '| skiff tokenize | %.4f | %.2f |\n' "$s" "$(echo "$bytes / 1000000 / $s" | bc -l)"
if [ $have_peer = 1 ]; then
  p=$(median < "$tmp/peer")
  printf '| llama.cpp llama-tokenize (c392e50) | %.4f | %.2f |\n' "$p" "$(echo "$bytes / 1000000 / $p" | bc -l)"
else
  echo "| llama.cpp llama-tokenize | (not built: $peer) | |"
fi
echo
echo "skiff in-process (encode only):"
"$build/skiff" tokenize -m "$vocab" --no-parse-special -f "$tmp/text.txt" --bench "$rounds"

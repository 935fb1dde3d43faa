#!/usr/bin/env bash
# skiff against llama.cpp (commit c392e50, built once by ../shared/peers/build-llamacpp.sh) on
# random-weight models of two shapes, in the same run: for each file, rounds of llama-bench -r 1
# and skiff bench -r 1 alternately (bench/same_run.py), then per test both medians, the median of
# the per-round ratios and the memory read bandwidth measured in the same rounds. No fixed numbers.
#
#   bench/compare_llamacpp.sh [--build DIR] [--dir MODELDIR] [--rounds N] [--shapes LIST]
#       [--types LIST] [--files LIST] [--tests LIST] [-t THREADS] [--peer BIN] [--json OUT]
#
#   --shapes  skiff synth shapes (default tinyllama,llama3-1b: the 0.85B reference shape and
#             Llama-3.2-1B's)
#   --types   f16,bf16,q8_0,q4_0,q4_K,q6_K,q4_k_m (default: all). q4_K, q6_K and q4_k_m are
#             `skiff quantize`d from the F16 file (q4_k_m: llama.cpp's Q4_K_M mix); the others
#             come straight from `skiff synth`.
#   --files   GGUF files to use instead of (not in addition to) the synthetic ones
#   --tests   llama-bench test names (default pp64,pp512,tg128,pp1024+tg128; ppN+tgM is -pg N,M)
#   --rounds  alternating rounds (default 5)
# Files are made once into MODELDIR (default /tmp/skiff-bench-models; all 14 take about 17 GB).
# Quick run: bench/compare_llamacpp.sh --shapes small --types q4_0 --tests pp64,tg32 --rounds 1
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$here/../build dir=/tmp/skiff-bench-models rounds=5 threads=2 peer="" json=""
shapes=tinyllama,llama3-1b types=f16,bf16,q8_0,q4_0,q4_K,q6_K,q4_k_m files="" tests=pp64,pp512,tg128,pp1024+tg128
usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --shapes) shapes=$2; shift 2 ;;
    --types) types=$2; shift 2 ;;
    --files) files=$2; shift 2 ;;
    --tests) tests=$2; shift 2 ;;
    -t) threads=$2; shift 2 ;;
    --peer) peer=$2; shift 2 ;;
    --json) json=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "error: unknown argument $1" >&2; usage ;;
  esac
done
skiff=$build/skiff
[ -x "$skiff" ] || { echo "error: $skiff not found (build first)" >&2; exit 1; }
[ -n "$peer" ] || peer=$("$here/../../shared/peers/build-llamacpp.sh")

models=()
if [ -n "$files" ]; then
  IFS=, read -ra models <<<"$files"
else
  mkdir -p "$dir"
  IFS=, read -ra shape_list <<<"$shapes"
  IFS=, read -ra type_list <<<"$types"
  for shape in "${shape_list[@]}"; do
    for type in "${type_list[@]}"; do
      out="$dir/$shape-$type.gguf"
      if [ ! -f "$out" ]; then
        case $type in
          q4_K|q6_K|q4_k_m)
            src="$dir/$shape-f16.gguf"
            [ -f "$src" ] || "$skiff" synth -o "$src" --shape "$shape" --type f16 -t "$threads" 2>/dev/null
            "$skiff" quantize "$src" "$out" "$type" 2>/dev/null ;;
          *) "$skiff" synth -o "$out" --shape "$shape" --type "$type" -t "$threads" 2>/dev/null ;;
        esac
        echo "made $out" >&2
      fi
      models+=("$out")
    done
  done
fi

args=(--rounds "$rounds" --tests "$tests" -t "$threads" --skiff "$skiff" --peer "$peer")
[ -z "$json" ] || args+=(--json "$json")
echo "skiff $(git -C "$here/.." rev-parse --short HEAD 2>/dev/null || echo '?'), llama.cpp c392e50 ($peer)"
/usr/bin/python3 "$here/same_run.py" "${args[@]}" "${models[@]}"

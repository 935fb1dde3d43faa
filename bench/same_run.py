#!/usr/bin/env python3
"""skiff bench next to llama-bench on the same GGUF files, in the same run.

Rounds alternate the two programs (llama-bench -r 1, then skiff bench -r 1, per file), so both
see the same machine state; the table gives each program's median tokens/s and the median of
the per-round ratios skiff/llama.cpp, plus the load average before and after.

  bench/same_run.py MODEL.gguf [MODEL2.gguf ...] [--rounds 5] [-p 64] [-n 32] [-t 2]
        [--skiff build/skiff] [--peer DIR]   (DIR: llama.cpp's bin; default: build it with
                                              ../shared/peers/build-llamacpp.sh)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def peer_bin(arg: str | None) -> str:
    if arg:
        return arg
    script = os.path.join(HERE, "..", "..", "shared", "peers", "build-llamacpp.sh")
    return subprocess.run(["bash", script], check=True, capture_output=True, text=True).stdout.strip()


def run_json(cmd: list[str]) -> list[dict]:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout)


def llama_bench(peer: str, model: str, a) -> dict:
    rows = run_json([os.path.join(peer, "llama-bench"), "-m", model, "-p", str(a.p), "-n", str(a.n),
                     "-r", "1", "-t", str(a.t), "-o", "json"])
    out = {}
    for r in rows:
        test = f"pp{r['n_prompt']}" if r["n_gen"] == 0 else f"tg{r['n_gen']}"
        out[test] = r["avg_ts"]
    return out


def skiff_bench(skiff: str, model: str, a) -> dict:
    rows = run_json([skiff, "bench", "-m", model, "-p", str(a.p), "-n", str(a.n), "-r", "1",
                     "-t", str(a.t), "-o", "json"])
    return {r["test"]: r["avg_ts"] for r in rows}


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("-p", type=int, default=64)
    ap.add_argument("-n", type=int, default=32)
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("--skiff", default=os.path.join(HERE, "..", "build", "skiff"))
    ap.add_argument("--peer")
    a = ap.parse_args()
    peer = peer_bin(a.peer)
    load_before = load()
    results = {m: {"skiff": [], "llama.cpp": []} for m in a.models}
    for r in range(a.rounds):
        for m in a.models:
            results[m]["llama.cpp"].append(llama_bench(peer, m, a))
            results[m]["skiff"].append(skiff_bench(a.skiff, m, a))
        print(f"round {r + 1}/{a.rounds} done (load {load()})", file=sys.stderr)
    print(f"load average before: {load_before}; after: {load()}; {a.rounds} alternating rounds, "
          f"{a.t} threads")
    print("| file | test | skiff t/s (median) | llama.cpp t/s (median) | skiff/llama.cpp (median of rounds) |")
    print("|---|---|---|---|---|")
    for m in a.models:
        s, l = results[m]["skiff"], results[m]["llama.cpp"]
        for test in s[0]:
            if test not in l[0]:
                continue
            ratios = [sr[test] / lr[test] for sr, lr in zip(s, l)]
            print(f"| {os.path.basename(m)} | {test} | {statistics.median(x[test] for x in s):.2f} | "
                  f"{statistics.median(x[test] for x in l):.2f} | {statistics.median(ratios):.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

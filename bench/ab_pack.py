#!/usr/bin/env python3
"""Same-run A/B of the packed weight layouts against the file's row-major ones.

Fresh `skiff bench` processes alternate SKIFF_PACK=0 (row-major kernels) and the default
(packed, kernels/repack.h), the order flipping every round, and the median of the per-round
ratios packed / row-major is printed per test with its range.

  bench/ab_pack.py [--rounds 12] [-t 1] [-m MODEL] [-p 5,64,192] [-n 64] [-r 10] [--skiff build/skiff]
"""
import argparse
import json
import os
import statistics
import subprocess


def bench(a, pack):
    cmd = [a.skiff, "bench", "-t", str(a.t), "-p", a.p, "-n", a.n, "-r", str(a.r), "--no-membw", "-o", "json"]
    if a.m:
        cmd += ["-m", a.m]
    out = subprocess.run(cmd, env={**os.environ, "SKIFF_PACK": pack}, capture_output=True, text=True, check=True)
    return {row["test"]: row["avg_ts"] for row in json.loads(out.stdout)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("-t", type=int, default=1)
    ap.add_argument("-m", default=None, help="model (default: the built-in)")
    ap.add_argument("-p", default="5,64,192")
    ap.add_argument("-n", default="64")
    ap.add_argument("-r", type=int, default=10, help="repetitions inside each process")
    ap.add_argument("--skiff", default="build/skiff")
    a = ap.parse_args()
    runs = {"0": [], "1": []}
    for r in range(a.rounds):
        for pack in ("0", "1") if r % 2 == 0 else ("1", "0"):
            runs[pack].append(bench(a, pack))
    for test in runs["0"][0]:
        plain = [x[test] for x in runs["0"]]
        packed = [x[test] for x in runs["1"]]
        ratios = [b / p for p, b in zip(plain, packed)]
        print(f"{test}: row-major {statistics.median(plain):.0f} t/s, packed {statistics.median(packed):.0f} t/s, "
              f"packed/row-major {statistics.median(ratios):.2f}x [{min(ratios):.2f}..{max(ratios):.2f}] "
              f"({a.rounds} rounds, {a.t} threads)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""skiff bench next to llama-bench on the same GGUF files, in the same run.

Each round runs, per file, llama-bench -r 1 and then skiff bench -r 1 (every test in one
invocation of each), so both programs see the same machine state; each round also measures the
machine's memory read bandwidth (`skiff bench --membw`). The table gives, per file and test, each
program's median tokens/s and the median of the per-round ratios skiff/llama.cpp, plus the
bandwidth (median and range over the rounds) and the load average before and after.

  bench/same_run.py MODEL.gguf [MODEL2.gguf ...] [--rounds 5] [--tests pp64,tg32,pp1024+tg128]
        [-t 2] [--skiff build/skiff] [--peer DIR] [--json OUT.json] [--extra-args "..."]
  DIR: llama.cpp's bin folder (default: ../shared/peers/build-llamacpp.sh, which builds it once
  and prints it). Test names are llama-bench's: ppN (prompt), tgN (decode), ppN+tgM (-pg N,M).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def peer_bin(arg: str | None) -> str:
    if arg:
        return arg
    script = os.path.join(HERE, "..", "..", "shared", "peers", "build-llamacpp.sh")
    return subprocess.run(["bash", script], check=True, capture_output=True, text=True).stdout.strip()


def parse_tests(text: str) -> list[tuple[int, int]]:
    """"pp64,tg32,pp1024+tg128" -> [(64, 0), (0, 32), (1024, 128)] as (n_prompt, n_gen)."""
    tests = []
    for name in filter(None, text.split(",")):
        m = re.fullmatch(r"pp(\d+)\+tg(\d+)|pp(\d+)|tg(\d+)", name)
        if not m:
            sys.exit(f"error: unknown test '{name}' (ppN, tgN or ppN+tgM)")
        pg_p, pg_g, pp, tg = m.groups()
        tests.append((int(pg_p), int(pg_g)) if pg_p else (int(pp), 0) if pp else (0, int(tg)))
    if not tests:
        sys.exit("error: no tests")
    return tests


def test_name(n_prompt: int, n_gen: int) -> str:
    if n_gen == 0:
        return f"pp{n_prompt}"
    return f"tg{n_gen}" if n_prompt == 0 else f"pp{n_prompt}+tg{n_gen}"


def test_args(tests: list[tuple[int, int]]) -> list[str]:
    """-p/-n/-pg arguments both programs read the same way (llama-bench's syntax)."""
    pp = [str(p) for p, g in tests if g == 0]
    tg = [str(g) for p, g in tests if p == 0]
    args = ["-p", ",".join(pp) or "0", "-n", ",".join(tg) or "0"]
    for p, g in tests:
        if p and g:
            args += ["-pg", f"{p},{g}"]
    return args


def run_json(cmd: list[str]) -> list[dict]:
    p = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        sys.exit(f"error: {shlex.join(cmd)} failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout)


def bench(cmd: list[str]) -> dict[str, float]:
    return {test_name(r["n_prompt"], r["n_gen"]): r["avg_ts"] for r in run_json(cmd)}


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def fmt_ratio(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}x [{min(values):.2f}..{max(values):.2f}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tests", default="pp64,tg32", help="comma list of ppN, tgN, ppN+tgM")
    ap.add_argument("-t", type=int, default=2, help="threads for both programs")
    ap.add_argument("--skiff", default=os.path.join(HERE, "..", "build", "skiff"))
    ap.add_argument("--peer", help="llama.cpp's bin folder")
    ap.add_argument("--json", help="also write every sample here")
    ap.add_argument("--extra-args", default="", help="more arguments for both programs (e.g. '-ctk f16')")
    a = ap.parse_args()
    tests = parse_tests(a.tests)
    names = [test_name(p, g) for p, g in tests]
    peer = peer_bin(a.peer)
    common = test_args(tests) + ["-r", "1", "-t", str(a.t), "-o", "json"] + shlex.split(a.extra_args)
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_before = load()
    results = {m: {"skiff": [], "llama.cpp": []} for m in a.models}
    membw = []
    for r in range(a.rounds):
        bw = run_json([a.skiff, "bench", "--membw", "-t", str(a.t), "-o", "json"])
        membw.append(bw[0]["read_gbps"])
        for m in a.models:
            results[m]["llama.cpp"].append(bench([os.path.join(peer, "llama-bench"), "-m", m] + common))
            results[m]["skiff"].append(bench([a.skiff, "bench", "-m", m, "--no-membw"] + common))
        print(f"round {r + 1}/{a.rounds} done (load {load()}, read bandwidth {membw[-1]:.1f} GB/s)",
              file=sys.stderr, flush=True)
    load_after = load()

    print(f"{started}, {cpu_name()}, {a.t} threads, {a.rounds} alternating rounds "
          f"(llama-bench -r 1, then skiff bench -r 1, per file){', ' + a.extra_args if a.extra_args else ''}")
    print(f"memory read bandwidth (skiff bench --membw -t {a.t}, once per round): median "
          f"{statistics.median(membw):.1f} GB/s [{min(membw):.1f}..{max(membw):.1f}]")
    print(f"load average before: {load_before}; after: {load_after}")
    print()
    print("| file | test | skiff t/s (median) | llama.cpp t/s (median) | skiff/llama.cpp (median of rounds [range]) |")
    print("|---|---|---:|---:|---:|")
    summary = []
    for m in a.models:
        s, l = results[m]["skiff"], results[m]["llama.cpp"]
        for test in names:
            if test not in s[0] or test not in l[0]:
                print(f"| {os.path.basename(m)} | {test} | missing | missing | |")
                continue
            ratios = [sr[test] / lr[test] for sr, lr in zip(s, l)]
            row = {"file": m, "test": test,
                   "skiff_ts": [x[test] for x in s], "llamacpp_ts": [x[test] for x in l],
                   "skiff_median": statistics.median(x[test] for x in s),
                   "llamacpp_median": statistics.median(x[test] for x in l),
                   "ratio_median": statistics.median(ratios), "ratios": ratios}
            summary.append(row)
            print(f"| {os.path.basename(m)} | {test} | {row['skiff_median']:.2f} | {row['llamacpp_median']:.2f} | "
                  f"{fmt_ratio(ratios)} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"started": started, "cpu": cpu_name(), "threads": a.t, "rounds": a.rounds,
                       "extra_args": a.extra_args, "membw_gbps": membw, "load_before": load_before,
                       "load_after": load_after, "results": summary}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

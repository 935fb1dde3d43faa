#!/usr/bin/python3
"""Pipeline stages over MPI (docs/DISTRIBUTED.md): decode tokens/s, time to first token, bytes
sent per token and peak RSS per rank for 1, 2 and 4 stages, on loopback as it is and through a
simulated link (--sim-link), against the model

    time per token = (the same stages unshaped) + S x (latency + bytes per message / bandwidth)

and self-speculation's speedup over plain decoding with 2 stages. Prints a markdown table.

Run: python3 bench/mpi_pipeline.py [--skiff build/skiff] [-m MODEL] [-n 128] [--link 1Gbit,200us]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys

MPI_ARGS = ["--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "--mca", "btl", "self,tcp",
            "--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include", "lo"]
PROMPT = "Once upon a time, there was a little girl named Lily. She loved to play in the park with her red ball."


def parse_link(text: str) -> tuple[float, float]:
    bw, lat = text.split(",")
    units = {"Gbit": 1e9, "Mbit": 1e6, "Kbit": 1e3, "bit": 1.0}
    bits = next(float(bw[: -len(u)]) * m for u, m in units.items() if bw.endswith(u)) if not bw[-1].isdigit() else float(bw)
    lunits = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
    secs = next(float(lat[: -len(u)]) * m for u, m in lunits.items() if lat.endswith(u)) if not lat[-1].isdigit() else float(lat)
    return bits, secs


def run(args, stages: int, extra: list[str]) -> dict:
    """The best of --repeat runs (highest decode tok/s; lowest TTFT): a shared machine's noise
    only ever slows a run down."""
    runs = [run_once(args, stages, extra) for _ in range(args.repeat)]
    best = max(runs, key=lambda r: r["tps"])
    best["ttft_ms"] = min(r["ttft_ms"] for r in runs)
    return best


def run_once(args, stages: int, extra: list[str]) -> dict:
    cmd = [args.skiff, "generate", *args.model, "-p", PROMPT, "-n", str(args.n), "--temp", "0", "-t", "1", *extra]
    # One stage runs under mpirun too, for the same stats line (peak RSS).
    cmd = [shutil.which("mpirun"), *MPI_ARGS, "-np", str(stages), *cmd, "--stages", "auto"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr}")
    m = re.search(r"prompt: (\d+) tokens, ([\d.]+) tok/s \| generated: (\d+) tokens, ([\d.]+) tok/s", r.stderr)
    out = {"prompt": int(m[1]), "ttft_ms": 1e3 * int(m[1]) / float(m[2]), "generated": int(m[3]), "tps": float(m[4])}
    p = re.search(r"(\d+) bytes/token", r.stderr)
    out["bytes_per_token"] = int(p[1]) if p else 0
    rss = re.search(r"peak RSS MiB per rank: ([\d. ]+)", r.stderr)
    out["rss"] = rss[1].strip().replace(" ", " / ") if rss else ""
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skiff", default="build/skiff")
    ap.add_argument("-m", "--model", default="")
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("--link", default="1Gbit,200us")
    ap.add_argument("--stages", default="1,2,4")
    ap.add_argument("--self-spec", default="4")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    args.model = ["-m", args.model] if args.model else []
    bits, latency = parse_link(args.link)

    print(f"| stages | link | decode tok/s | model tok/s | TTFT ms | bytes/token | peak RSS MiB per rank |")
    print("|---:|---|---:|---:|---:|---:|---|")
    unshaped = {}
    for s in map(int, args.stages.split(",")):
        for link in ("", args.link):
            # One stage has no link to shape: S = 1 is measured plain only (still under mpirun
            # with --stages auto, for its RSS line).
            if s == 1 and link:
                continue
            r = run(args, s, ["--sim-link", link] if link else [])
            model = ""
            if link and s in unshaped:
                # A decoded token crosses S links (S - 1 stages and back to rank 0), each message
                # about bytes/token / S (one row of hidden states and a 16-byte header).
                per_msg = unshaped[s]["bytes_per_token"] / s
                t = 1.0 / unshaped[s]["tps"] + s * (latency + per_msg * 8 / bits)
                model = f"{1.0 / t:.0f}"
            if not link:
                unshaped[s] = r
            print(f"| {s} | {link or 'loopback'} | {r['tps']:.0f} | {model} | {r['ttft_ms']:.1f} | "
                  f"{r['bytes_per_token']} | {r['rss']} |")
    print()
    print(f"Self-speculation (--self-spec {args.self_spec}), 2 stages:")
    print("| link | plain tok/s | self-spec tok/s | speedup |")
    print("|---|---:|---:|---:|")
    for link in ("", args.link):
        extra = ["--sim-link", link] if link else []
        plain = run(args, 2, extra)
        spec = run(args, 2, [*extra, "--self-spec", args.self_spec])
        print(f"| {link or 'loopback'} | {plain['tps']:.0f} | {spec['tps']:.0f} | {spec['tps'] / plain['tps']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

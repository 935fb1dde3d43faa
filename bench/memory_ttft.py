#!/usr/bin/python3
"""Time to first token of memory-augmented answering, read (the k entries' text prefilled)
against splice (their stored KV spliced in), as entries grow longer: a timing-only run on a
synthetic model of a larger shape (random weights: the answers mean nothing, the times do).

For each entry length, a knowledge base from scripts/knowledge_qa.py has its passages joined
into entries of about that many tokens; `skiff memory build` stores them and `skiff memory
eval --methods read,read-block,splice -o json` times the same questions by each method. Prints a
markdown table (TTFT p50 per method, the speed-up, prefilled tokens) and writes an SVG plot of
TTFT against k x entry length.

Run: python3 bench/memory_ttft.py [--skiff build/skiff] [--shape small] [-k 4]
     [--lengths 16,32,64,100] [--questions 40] [-t 2] [--svg memory_ttft.svg]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
METHODS = ["read", "read-block", "splice"]
COLORS = {"read": "#d62728", "read-block": "#ff7f0e", "splice": "#1f77b4"}


def run(cmd: list, **kw) -> str:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"error: {' '.join(map(str, cmd))}: {r.stderr.strip()}")
    return r.stdout


def joined_kb(kb_path: str, out_path: str, words: int) -> None:
    """Entries of about `words` words: consecutive passages joined (ids and kinds kept simple)."""
    passages = [json.loads(line)["text"] for line in open(kb_path) if json.loads(line)["kind"] == "passage"]
    entries, cur = [], []
    for p in passages:
        cur.append(p)
        if sum(len(x.split()) for x in cur) >= words:
            entries.append(" ".join(cur))
            cur = []
    with open(out_path, "w") as f:
        for i, text in enumerate(entries):
            f.write(json.dumps({"id": f"e{i:06d}", "kind": "passage", "text": text}) + "\n")


def svg(points: dict, path: str) -> None:
    """points: method -> [(k x entry tokens, ttft ms)]."""
    w, h, m = 560, 360, 60
    xs = [x for v in points.values() for x, _ in v]
    ys = [y for v in points.values() for _, y in v]
    xmax, ymax = max(xs) * 1.05, max(ys) * 1.1

    def px(x):
        return m + (w - 2 * m) * x / xmax

    def py(y):
        return h - m + -(h - 2 * m) * y / ymax

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<line x1="{m}" y1="{h - m}" x2="{w - m}" y2="{h - m}" stroke="black"/>',
           f'<line x1="{m}" y1="{m}" x2="{m}" y2="{h - m}" stroke="black"/>',
           f'<text x="{w / 2}" y="{h - 20}" text-anchor="middle">k x entry length (tokens read before the question)</text>',
           f'<text x="16" y="{h / 2}" transform="rotate(-90 16 {h / 2})" text-anchor="middle">time to first token (ms, p50)</text>']
    for i in range(5):
        xv, yv = xmax * i / 4, ymax * i / 4
        out.append(f'<text x="{px(xv)}" y="{h - m + 16}" text-anchor="middle">{xv:.0f}</text>')
        out.append(f'<text x="{m - 6}" y="{py(yv) + 4}" text-anchor="end">{yv:.0f}</text>')
    for j, (method, pts) in enumerate(points.items()):
        pts = sorted(pts)
        c = COLORS.get(method, "black")
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="'
                   + " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts) + '"/>')
        for x, y in pts:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{c}"/>')
        out.append(f'<text x="{m + 10}" y="{m + 16 * j}" fill="{c}">{method}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skiff", default=os.path.join(ROOT, "build", "skiff"))
    ap.add_argument("--shape", default="small")
    ap.add_argument("-k", type=int, default=4)
    ap.add_argument("--lengths", default="16,32,64,100", help="entry lengths in words")
    ap.add_argument("--questions", type=int, default=40)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--svg", default="memory_ttft.svg")
    args = ap.parse_args()
    rows, points = [], {m: [] for m in METHODS}
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, f"{args.shape}.gguf")
        run([args.skiff, "synth", "-o", model, "--shape", args.shape, "-t", args.threads])
        data = os.path.join(tmp, "kqa")
        run([sys.executable, os.path.join(ROOT, "scripts", "knowledge_qa.py"), "--seed", 1, "--entities", 800,
             "-o", data])
        for words in [int(x) for x in args.lengths.split(",")]:
            kb, store = os.path.join(tmp, f"kb{words}.jsonl"), os.path.join(tmp, f"kb{words}.skm")
            joined_kb(os.path.join(data, "kb.jsonl"), kb, words)
            build = run([args.skiff, "memory", "build", "-m", model, "--kb", kb, "-o", store, "-t", args.threads])
            # Questions are only timed: their gold ids need not be in this store.
            qs = os.path.join(tmp, "q.jsonl")
            with open(qs, "w") as f:
                for line in list(open(os.path.join(data, "questions.jsonl")))[: args.questions]:
                    q = json.loads(line)
                    f.write(json.dumps({"question": q["question"], "answer": q["answer"], "ids": ["e000000"]}) + "\n")
            out = json.loads(run([args.skiff, "memory", "eval", "-m", model, "--store", store, "--questions", qs,
                                  "-k", args.k, "--methods", ",".join(METHODS), "-o", "json", "-t", args.threads,
                                  "-c", 0], timeout=3600))
            by = {r["method"]: r for r in out}
            entry_tokens = (by["read"]["prefill_tokens_per_question"] - by["splice"]["prefill_tokens_per_question"]) / args.k
            for m in METHODS:
                points[m].append((args.k * entry_tokens, by[m]["ttft_ms_p50"]))
            rows.append((words, entry_tokens, by, build.strip()))
    print(f"shape {args.shape}, k = {args.k}, {args.questions} questions, {args.threads} threads; "
          f"TTFT p50 in ms (question in -> first answer token's logits out)\n")
    print("| entry words | entry tokens | read | read-block | splice | read / splice | bytes per stored entry |")
    print("|---|---|---|---|---|---|---|")
    for words, tokens, by, _ in rows:
        print(f"| {words} | {tokens:.0f} | {by['read']['ttft_ms_p50']:.1f} | {by['read-block']['ttft_ms_p50']:.1f} | "
              f"{by['splice']['ttft_ms_p50']:.1f} | {by['read']['ttft_ms_p50'] / by['splice']['ttft_ms_p50']:.1f}x | "
              f"{by['splice']['bytes_per_entry']:.0f} |")
    svg(points, args.svg)
    print(f"\nplot: {args.svg}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

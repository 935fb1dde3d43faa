#!/usr/bin/python3
"""Memory-augmented generation against the independent float64 PyTorch reference.

Run: /usr/bin/python3 tests/reference/test_memory_reference.py --skiff build/skiff --shared ../shared

For stories260K and the built-in stories3M (real weights, F32), a small knowledge base is built
into an F32 store and one question is asked with given entries by each method; skiff's hidden
--dump writes the sequence it read, each position's first visible position and the first
answer token's logits. Checked here, independently:
- the sequence is [BOS] + each entry's tokens + the tokens of "Q: <question> A:" (each text
  tokenized alone by `skiff tokenize --no-bos`), and the block starts are what block attention
  means (an entry sees itself only; BOS and the question see everything, or `read` is causal);
- `read` equals the reference's causal forward, `read-block` and `splice` equal the
  reference's forward with that block mask (max |diff| <= 1e-4);
- `splice-uncorrected` (keys left at their stored positions) does NOT (> 1e-2);
- `splice-recompute --recompute R` equals the reference's forward over a sequence that holds
  each entry twice: its rows as encoded alone (block-masked, what the store keeps), and its
  last R rows again, computed seeing BOS, what is read of the entries before, the entry's
  stored rows and its own recomputed rows; the question sees the stored rows but the last R
  and the recomputed ones.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gguf_writer as gw  # noqa: E402
import llama_reference as ref  # noqa: E402

TOL = 1e-4
KB = [
    ("p1", "passage", "Bomira lives in Karat. Bomira has a pet cat. Tavek likes the color red."),
    ("q1", "qa", "Q: What pet does Bomira have? A: cat."),
    ("p2", "passage", "Tavek works as a baker. Tavek has a friend named Bomira."),
    ("q2", "qa", "Q: What does Tavek like to eat? A: cake."),
]
ENTRIES = ["p2", "q1", "p1"]
QUESTION = "What pet does Bomira have?"
RECOMPUTE = 3


def recompute_pattern(pieces, question, bos, r):
    """Tokens, positions and the visible matrix of splice-recompute (see the module doc)."""
    rows = [(bos, 0)]          # (token, position)
    live = [0]                 # rows what follows reads
    see = {0: [0]}             # row -> rows it sees
    pos = 1
    for piece in pieces:
        n = len(piece)
        keep = n - min(r, n)
        stored = []
        for j, t in enumerate(piece):
            i = len(rows)
            rows.append((t, pos + j))
            stored.append(i)
            see[i] = stored[: j + 1]          # the entry alone, causal
        redo = []
        for j in range(keep, n):
            i = len(rows)
            rows.append((piece[j], pos + j))
            redo.append(i)
            see[i] = live + stored[:keep] + redo
        live = live + stored[:keep] + redo
        pos += n
    for j, t in enumerate(question):
        i = len(rows)
        rows.append((t, pos + j))
        live = live + [i]
        see[i] = list(live)
    visible = np.zeros((len(rows), len(rows)), dtype=bool)
    for i, s in see.items():
        visible[i, s] = True
    return [t for t, _ in rows], [p for _, p in rows], visible


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skiff", required=True)
    ap.add_argument("--shared", required=True)
    args = ap.parse_args()
    passed = failed = 0

    def record(ok: bool, name: str, detail: str = ""):
        nonlocal passed, failed
        passed += ok
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)

    def skiff(*argv) -> str:
        r = subprocess.run([args.skiff, *map(str, argv)], capture_output=True, text=True, timeout=120,
                           stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise RuntimeError(f"skiff {' '.join(map(str, argv))}: {r.stderr.strip()}")
        return r.stdout

    models = {"stories260K": os.path.join(HERE, "..", "..", "models", "stories260K.gguf"),
              "stories3M": os.path.join(HERE, "..", "..", "models", "stories3M-layerskip.gguf")}
    with tempfile.TemporaryDirectory() as tmp:
        kb = os.path.join(tmp, "kb.jsonl")
        with open(kb, "w") as f:
            for id_, kind, text in KB:
                f.write(json.dumps({"id": id_, "kind": kind, "text": text}) + "\n")
        for name, path in models.items():
            g = gw.read_gguf(path)
            cfg, weights = ref.config_from_gguf(g), ref.weights_from_gguf(g)
            store = os.path.join(tmp, name + ".skm")
            skiff("memory", "build", "-m", path, "--kb", kb, "-o", store, "--kv-type", "f32", "-t", 2)

            def tokenize(text: str):
                return [int(t) for t in skiff("tokenize", "-m", path, "--no-bos", "-p", text).split()]

            bos = [int(t) for t in skiff("tokenize", "-m", path, "-p", "x").split()][0]
            texts = dict((i, t) for i, _, t in KB)
            pieces = [tokenize(texts[e]) for e in ENTRIES]
            question = tokenize(f"Q: {QUESTION} A:")
            tokens = [bos] + [t for p in pieces for t in p] + question
            block_starts = [0]
            for p in pieces:
                block_starts += [len(block_starts)] * len(p)
            block_starts += [0] * len(question)

            want_causal = ref.forward(cfg, weights, tokens)[-1]
            want_block = ref.forward(cfg, weights, tokens, first_visible=block_starts)[-1]
            record(np.abs(want_causal - want_block).max() > 1e-2, f"{name}: the block mask matters in the reference",
                   f"{np.abs(want_causal - want_block).max():.3g}")
            for method, want, expect_match in [("read", want_causal, True), ("read-block", want_block, True),
                                               ("splice", want_block, True),
                                               ("splice-uncorrected", want_block, False)]:
                dump = os.path.join(tmp, f"{name}-{method}.json")
                try:
                    skiff("memory", "ask", "-m", path, "--store", store, "--entries", ",".join(ENTRIES), "-p",
                          QUESTION, "--method", method, "-n", 1, "--dump", dump, "-t", 2)
                    with open(dump) as f:
                        d = json.load(f)
                except Exception as e:  # noqa: BLE001
                    record(False, f"{name} {method}", str(e))
                    continue
                starts = block_starts if method != "read" else [0] * len(tokens)
                same = d["tokens"] == tokens and d["first_visible"] == starts
                record(same, f"{name} {method}: the sequence",
                       "" if same else f"got {d['tokens']} / {d['first_visible']}, want {tokens} / {starts}")
                diff = float(np.abs(np.asarray(d["logits"], dtype=np.float64) - want).max())
                ok = diff <= TOL if expect_match else diff > 1e-2
                record(ok, f"{name} {method}: logits {'==' if expect_match else '!='} reference",
                       f"max_abs={diff:.3g} (tol {TOL:.0e}; max |logit| {np.abs(want).max():.3g})")
            # splice-recompute against the two-copies construction.
            toks, positions, visible = recompute_pattern(pieces, question, bos, RECOMPUTE)
            want_recompute = ref.forward(cfg, weights, toks, positions=positions, visible=visible)[-1]
            dump = os.path.join(tmp, f"{name}-recompute.json")
            skiff("memory", "ask", "-m", path, "--store", store, "--entries", ",".join(ENTRIES), "-p", QUESTION,
                  "--method", "splice-recompute", "--recompute", RECOMPUTE, "-n", 1, "--dump", dump, "-t", 2)
            with open(dump) as f:
                d = json.load(f)
            starts = [0]
            for p in pieces:  # an entry's stored rows see it alone, its recomputed rows everything
                starts += [len(starts) if j < len(p) - RECOMPUTE else 0 for j in range(len(p))]
            starts += [0] * len(question)
            same = d["tokens"] == tokens and d["first_visible"] == starts
            record(same, f"{name} splice-recompute: the sequence",
                   "" if same else f"got {d['first_visible']}, want {starts}")
            got = np.asarray(d["logits"], dtype=np.float64)
            diff = float(np.abs(got - want_recompute).max())
            record(diff <= TOL, f"{name} splice-recompute: logits == reference", f"max_abs={diff:.3g} (tol {TOL:.0e})")
            apart = min(float(np.abs(got - want_block).max()), float(np.abs(got - want_causal).max()))
            record(apart > 1e-2, f"{name} splice-recompute: neither block reading nor causal", f"{apart:.3g}")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

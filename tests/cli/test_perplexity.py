#!/usr/bin/python3
"""Perplexity through the CLI, checked three ways.

1. The method: skiff's perplexity of stories260K on a few chunks equals the one computed here
   from the NumPy/PyTorch reference forward with llama.cpp's recipe (chunks of n_ctx tokens,
   BOS first, score the second half).
2. The figure on the TinyStories validation text is reported (text and JSON output).
3. The Q8_0 file (skiff quantize) agrees with F32 within 1%.

Run: /usr/bin/python3 tests/cli/test_perplexity.py --skiff build/skiff --shared ../shared
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
from harness import setup  # noqa: E402


def main() -> int:
    args, c = setup()
    text_file = os.path.join(args.shared, "data", "tinystories_valid_prefix.txt")
    model = os.path.join(HERE, "..", "..", "models", "stories260K.gguf")

    def ppl(model_path: str, ctx: int, chunks: int, fmt: str = "json"):
        r = c.skiff("perplexity", "-m", model_path, "-f", text_file, "-c", ctx, "--chunks", chunks, "-o", fmt,
                    timeout=300)
        if r.returncode != 0:
            raise RuntimeError(r.stderr)
        return r.stdout

    # 1. Method against the reference.
    import gguf_writer as gw
    import llama_reference as ref
    g = gw.read_gguf(model)
    cfg = ref.config_from_gguf(g)
    weights = ref.weights_from_gguf(g)
    ctx, chunks = 64, 4
    ids = [int(t) for t in c.skiff("tokenize", "-m", model, "-f", text_file).stdout.split()]
    nll = []
    for k in range(chunks):
        chunk = ids[k * ctx:(k + 1) * ctx]
        chunk[0] = 1  # BOS
        logits = ref.forward(cfg, weights, chunk)
        for j in range(ctx // 2, ctx - 1):
            row = logits[j].astype(np.float64)
            m = row.max()
            nll.append(math.log(np.exp(row - m).sum()) + m - row[chunk[j + 1]])
    want = math.exp(sum(nll) / len(nll))
    got = json.loads(ppl(model, ctx, chunks))
    c.check("perplexity method matches the reference", abs(got["ppl"] - want) / want < 1e-4 and got["tokens"] == len(nll),
            f"skiff {got} reference ppl {want} tokens {len(nll)}")

    # 2. The reported figure, text format.
    out = ppl(model, 256, 100, "text")
    m = re.match(r"PPL = ([0-9.]+) \+/- ([0-9.]+)", out)
    c.check("text output has 'PPL = x +/- y'", m is not None, out)
    f32 = json.loads(ppl(model, 256, 100))
    print(f"stories260K perplexity (ctx 256, 100 chunks, tinystories_valid_prefix): {f32['ppl']:.4f} +/- {f32['ppl_err']:.4f}")
    c.check("json output has ppl, ppl_err, tokens", {"ppl", "ppl_err", "tokens"} <= f32.keys(), str(f32))

    # 3. Q8_0 within 1% of F32.
    q8 = os.path.join(tempfile.mkdtemp(prefix="skiff-ppl-"), "q8_0.gguf")
    r = c.skiff("quantize", model, q8, "q8_0")
    c.check("quantize to q8_0", r.returncode == 0, r.stderr)
    q = json.loads(ppl(q8, 256, 100))
    rel = abs(q["ppl"] - f32["ppl"]) / f32["ppl"]
    print(f"q8_0 perplexity {q['ppl']:.4f} vs f32 {f32['ppl']:.4f}: {100 * rel:.3f}% apart")
    c.check("q8_0 perplexity within 1% of f32", rel < 0.01, f"{rel:.4%}")

    return c.finish()


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""LLM in a Flash through skiff's CLI.

- `flash-pack` of a ReLU-gated random model, then `generate --flash PACK` (threshold 0:
  exact) prints what `generate -m MODEL` prints, with an unlimited budget, a tight budget and a
  one-token window, with io_uring and with the thread-pool reader.
- `bench --flash -o json` carries ms_per_token, naive_ms_per_token, ram_ms_per_token,
  speedup_vs_naive, bytes_read_per_token, cache_hit_rate; with the exact decision the flash
  run's top-1 tokens all agree with the dense model's, and the budget charged stays under it.
- `flash-train-predictor` on a text prints recall and precision per layer and writes
  predictors.gguf; `generate --flash-predict` then runs, `bench --flash-predict -o json`
  reports a predictor_recall in (0, 1], and `perplexity --flash` (threshold 0: exact) equals
  `perplexity -m`.
- Bad input is a one-line error with exit code 1: a budget below the resident set (naming the
  minimum), a truncated or corrupted bundles.bin, --flash with -m, flash flags without
  --flash, a malformed budget, flash-pack of a file that is not GGUF, --flash-predict without
  predictors.gguf or together with a threshold, too little text to train predictors.

Run: /usr/bin/python3 tests/cli/test_flash.py --skiff build/skiff --shared ../shared
"""

from __future__ import annotations

import json
import re
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import one_line_error, setup  # noqa: E402

PROMPT = "Once upon a time"


def main() -> int:
    args, c = setup()
    vocab = os.path.join(args.shared, "models", "ggml-vocab-llama-spm.gguf")

    with tempfile.TemporaryDirectory(prefix="skiff-flash-cli-") as tmp:
        model = os.path.join(tmp, "relu.gguf")
        pack = os.path.join(tmp, "pack")
        r = c.skiff("synth", "-o", model, "--shape", "tiny", "--type", "f32", "--activation", "relu",
                    "--vocab", vocab)
        if not c.check("synth a ReLU-gated model", r.returncode == 0, r.stderr):
            return c.finish()
        r = c.skiff("flash-pack", model, "-o", pack)
        c.check("flash-pack", r.returncode == 0 and os.path.exists(os.path.join(pack, "bundles.bin")),
                r.stderr)

        gen = ["generate", "-p", PROMPT, "-n", "24", "--temp", "0", "-t", "2"]
        # The smallest budget that works, from the error for one that does not, plus room for
        # ~40 neurons per layer: the caches must evict and read in chunks.
        r = c.skiff(*gen, "--flash", pack, "--mem-budget", "1K")
        m = re.search(r"below the minimum ([0-9.]+) MiB", r.stderr)
        tight = f"{float(m.group(1)) + 0.1:.2f}M" if m else "64M"
        dense = c.skiff(*gen, "-m", model)
        c.check("dense generate", dense.returncode == 0 and dense.stdout.strip() != "", dense.stderr)
        for extra in (["--mem-budget", "0"], ["--mem-budget", tight, "--window", "1"],
                      ["--mem-budget", tight, "--io", "threads"], ["--no-direct", "--window", "2"]):
            r = c.skiff(*gen, "--flash", pack, *extra)
            c.check(f"generate --flash {' '.join(extra)} == dense",
                    r.returncode == 0 and r.stdout == dense.stdout,
                    f"rc {r.returncode}: {r.stdout!r} vs {dense.stdout!r} {r.stderr[-300:]}")
            c.check(f"generate --flash {' '.join(extra)} reports its plan and per-token stats",
                    "flash: budget" in r.stderr and "flash per token" in r.stderr, r.stderr[-300:])

        r = c.skiff("bench", "--flash", pack, "-m", model, "--mem-budget", tight, "-p", "8", "-n", "8",
                    "--naive-tokens", "2", "-t", "2", "-o", "json")
        try:
            j = json.loads(r.stdout)
        except json.JSONDecodeError:
            j = {}
        keys = ["ms_per_token", "naive_ms_per_token", "ram_ms_per_token", "speedup_vs_naive",
                "bytes_read_per_token", "cache_hit_rate"]
        c.check("bench --flash -o json has the keys", r.returncode == 0 and all(k in j for k in keys),
                r.stderr[-300:] + r.stdout[:300])
        if j:
            c.check("bench --flash: exact decision agrees with the dense model",
                    j.get("top1_agreement_with_ram") == 1.0, str(j.get("top1_agreement_with_ram")))
            plan = j.get("plan", {})
            c.check("bench --flash: charged bytes within the budget",
                    0 < plan.get("charged_bytes", 0) <= plan.get("budget_bytes", 0), str(plan))
            c.check("bench --flash: per-token rows", len(j.get("per_token", [])) == 8, "")

        # Learned predictors.
        text = os.path.join(args.shared, "data", "tinystories_valid_prefix.txt")
        r = c.skiff(*gen, "--flash", pack, "--flash-predict")
        c.check("--flash-predict before training: says how to make predictors",
                one_line_error(r) and "flash-train-predictor" in r.stderr, r.stderr)
        r = c.skiff("flash-train-predictor", pack, "--data", text, "--rank", "16,12", "--samples", "2048",
                    "-c", "128", "--epochs", "4", "-t", "2")
        rows = re.findall(r"^\| (\d+) \| (\d+) \| [0-9.]+% \| [0-9.]+% \| ([0-9.]+)% \| ([0-9.]+)% \|",
                          r.stdout, re.M)
        c.check("flash-train-predictor reports recall and precision per layer, with a rank per layer",
                r.returncode == 0 and [rank for _, rank, _, _ in rows] == ["16", "12"]
                and all(0 < float(rc) <= 100 for _, _, rc, _ in rows)
                and os.path.exists(os.path.join(pack, "predictors.gguf")), r.stdout + r.stderr[-300:])
        r = c.skiff("flash-train-predictor", pack, "--data", text, "--rank", "16,12,8")
        c.check("--rank with the wrong number of layers", one_line_error(r) and "2 layers" in r.stderr, r.stderr)
        r = c.skiff(*gen, "--flash", pack, "--flash-predict", "--mem-budget", tight)
        c.check("generate --flash-predict", r.returncode == 0 and r.stdout.strip() != "" and
                "learned predictors" in r.stderr, r.stderr[-300:])
        r = c.skiff("bench", "--flash", pack, "--flash-predict", "-p", "8", "-n", "8", "--naive-tokens", "2",
                    "-t", "2", "-o", "json")
        try:
            j = json.loads(r.stdout)
        except json.JSONDecodeError:
            j = {}
        recall = j.get("predictor_recall")
        c.check("bench --flash-predict reports the predictor's recall",
                r.returncode == 0 and isinstance(recall, float) and 0 < recall <= 1,
                r.stderr[-300:] + r.stdout[:200])
        ppl = ["perplexity", "-f", text, "-c", "64", "--chunks", "3", "-t", "2", "-o", "json"]
        dense_ppl = c.skiff(*ppl, "-m", model)
        flash_ppl = c.skiff(*ppl, "--flash", pack)
        try:
            a, b = json.loads(dense_ppl.stdout)["ppl"], json.loads(flash_ppl.stdout)["ppl"]
        except (json.JSONDecodeError, KeyError):
            a, b = 0, -1
        c.check("perplexity --flash (threshold 0) == perplexity -m", abs(a - b) <= 1e-4 * abs(a),
                f"{a} vs {b} {flash_ppl.stderr[-300:]}")
        r = c.skiff(*gen, "--flash", pack, "--flash-predict", "--flash-threshold", "0.1")
        c.check("--flash-predict with a threshold", one_line_error(r), r.stderr)
        short = os.path.join(tmp, "short.txt")
        with open(short, "w") as f:
            f.write("Once upon a time there was a cat.\n")
        r = c.skiff("flash-train-predictor", pack, "--data", short)
        c.check("flash-train-predictor with too little text", one_line_error(r) and "tokens" in r.stderr,
                r.stderr)

        # Bad input.
        r = c.skiff(*gen, "--flash", pack, "--mem-budget", "1K")
        c.check("budget below the resident set", one_line_error(r) and "below the minimum" in r.stderr,
                r.stderr)
        r = c.skiff(*gen, "--flash", pack, "--mem-budget", "lots")
        c.check("malformed budget", one_line_error(r) and "memory size" in r.stderr, r.stderr)
        r = c.skiff(*gen, "--mem-budget", "50%")
        c.check("--mem-budget without --flash", one_line_error(r) and "--flash" in r.stderr, r.stderr)
        r = c.skiff(*gen, "--flash", pack, "-m", model)
        c.check("--flash with -m", one_line_error(r), r.stderr)
        r = c.skiff(*gen, "--flash", pack, "--flash-threshold", "0.1", "--flash-sparsity", "0.5")
        c.check("threshold and sparsity together", one_line_error(r), r.stderr)
        r = c.skiff("flash-pack", os.path.join(args.shared, "data", "MANIFEST.md"), "-o",
                    os.path.join(tmp, "x"))
        c.check("flash-pack of a text file", one_line_error(r) and "GGUF" in r.stderr, r.stderr)

        bundles = os.path.join(pack, "bundles.bin")
        broken = os.path.join(tmp, "broken")
        shutil.copytree(pack, broken)
        size = os.path.getsize(bundles)
        with open(os.path.join(broken, "bundles.bin"), "r+b") as f:
            f.truncate(size - 1000)
        r = c.skiff(*gen, "--flash", broken)
        c.check("truncated bundles.bin", one_line_error(r) and "truncated" in r.stderr, r.stderr)
        with open(os.path.join(broken, "bundles.bin"), "r+b") as f:
            f.truncate(size)
            f.seek(20)
            f.write(b"\xff\xff")
        r = c.skiff(*gen, "--flash", broken)
        c.check("corrupted bundles.bin header", one_line_error(r), r.stderr)
        os.remove(os.path.join(broken, "resident.gguf"))
        r = c.skiff(*gen, "--flash", broken)
        c.check("missing resident.gguf", one_line_error(r), r.stderr)
    return c.finish()


if __name__ == "__main__":
    sys.exit(main())

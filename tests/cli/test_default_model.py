#!/usr/bin/python3
"""The built-in default model: skiff's own LayerSkip-trained TinyStories model
(models/stories3M-layerskip.gguf, see models/stories3M-layerskip.md).

- Commands without -m use it: `info` shows its shape, and greedy `generate` without -m prints
  what `generate -m models/stories3M-layerskip.gguf` prints.
- It writes better stories than stories260K: lower perplexity on held-out TinyStories text
  (the last quarter of ../shared/data/tinystories_valid_prefix.txt, which the training never
  saw; scripts/prepare_stories.py makes the split).
- Self-speculation on it prints plain greedy decoding's text for every exit layer.

Run: /usr/bin/python3 tests/cli/test_default_model.py --skiff build/skiff --shared ../shared
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from harness import setup  # noqa: E402

MODEL = os.path.join(REPO, "models", "stories3M-layerskip.gguf")
STORIES260K = os.path.join(REPO, "models", "stories260K.gguf")
LAYERS = 8
PROMPTS = ["Once upon a time", "Lily and Ben went to the park. They saw"]


def main() -> int:
    args, c = setup()

    r = c.skiff("info")
    c.check("info without -m shows the built-in model's shape",
            r.returncode == 0 and "dim 192, layers 8" in r.stdout, r.stdout[-400:] + r.stderr)

    for prompt in PROMPTS:
        gen = ["generate", "-p", prompt, "-n", "60", "--temp", "0", "-t", "1"]
        builtin = c.skiff(*gen)
        file = c.skiff(*gen, "-m", MODEL)
        c.check(f"built-in == models/ file ({prompt[:12]!r})",
                builtin.returncode == 0 and builtin.stdout == file.stdout and len(builtin.stdout) > 20,
                builtin.stderr + file.stderr)
        for e in range(1, LAYERS):
            for d in (1, 4):
                r = c.skiff(*gen, "--self-spec", str(e), "--draft-max", str(d))
                c.check(f"self-spec E={e} D={d} == plain ({prompt[:12]!r})",
                        r.returncode == 0 and r.stdout == builtin.stdout, r.stderr[-300:])

    with tempfile.TemporaryDirectory(prefix="skiff-default-") as tmp:
        subprocess.run([sys.executable, os.path.join(REPO, "scripts", "prepare_stories.py"),
                        "--shared", args.shared, "-o", tmp], check=True, capture_output=True)
        heldout = os.path.join(tmp, "heldout.txt")
        ppl = {}
        for name, path in (("built-in", MODEL), ("stories260K", STORIES260K)):
            r = c.skiff("perplexity", "-m", path, "-f", heldout, "-c", "256", "--chunks", "60", "-o", "json",
                        timeout=300)
            try:
                ppl[name] = json.loads(r.stdout)["ppl"]
            except (ValueError, KeyError, TypeError):
                c.check(f"perplexity {name}", False, r.stderr + r.stdout[:300])
        if len(ppl) == 2:
            c.check(f"held-out perplexity: built-in {ppl['built-in']:.3f} < stories260K {ppl['stories260K']:.3f}",
                    ppl["built-in"] < ppl["stories260K"])
    return c.finish()


if __name__ == "__main__":
    sys.exit(main())

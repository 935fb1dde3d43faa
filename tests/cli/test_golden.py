#!/usr/bin/python3
"""Golden tests of the real stories260K model through the CLI.

Greedy generation for every prompt of ../shared/golden/stories260K_greedy.jsonl (produced by
llama.cpp) must reproduce `expected` (= prompt + continuation) exactly, from:
  - the llama2.c legacy checkpoint + tok512.bin,
  - the llama2.c version-1 ("ak42") export,
  - llama.cpp's own GGUF conversion (peer/stories260K.gguf),
  - skiff's conversion to GGUF (F32), and the copy in models/ (the built-in default model is the LayerSkip-trained one: test_default_model.py).
skiff's converted GGUF is also read by the independent Python GGUF reader and run by the
NumPy/PyTorch reference, which must produce the same story: the file is readable by a
second implementation, not only by skiff.

Run: /usr/bin/python3 tests/cli/test_golden.py --skiff build/skiff --shared ../shared
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
from harness import setup  # noqa: E402


def main() -> int:
    args, c = setup()
    models = os.path.join(args.shared, "models")
    golden = [json.loads(line) for line in open(os.path.join(args.shared, "golden", "stories260K_greedy.jsonl"))]

    def must(*argv):
        """Runs skiff for a step the later checks need; raises if it fails."""
        r = c.skiff(*argv)
        if r.returncode != 0:
            raise RuntimeError(f"skiff {' '.join(map(str, argv))}: rc={r.returncode} {r.stderr.strip()}")
        return r

    tmp = tempfile.mkdtemp(prefix="skiff-golden-")
    converted = os.path.join(tmp, "stories260K.gguf")
    r = c.skiff("convert", "-m", os.path.join(models, "stories260K.bin"),
                "--tokenizer", os.path.join(models, "tok512.bin"), "-o", converted)
    c.check("convert llama2.c -> gguf", r.returncode == 0, r.stderr)

    sources = {
        "llama2c-legacy": ["-m", os.path.join(models, "stories260K.bin"), "--tokenizer", os.path.join(models, "tok512.bin")],
        "llama2c-v1": ["-m", os.path.join(models, "stories260K_v1export.bin"), "--tokenizer", os.path.join(models, "tok512.bin")],
        "peer-gguf": ["-m", os.path.join(models, "peer", "stories260K.gguf")],
        "converted-gguf": ["-m", converted],
        "repo-gguf": ["-m", os.path.join(REPO, "models", "stories260K.gguf")],
    }
    for source, model_args in sources.items():
        for case in golden:
            r = c.skiff("generate", *model_args, "-p", case["prompt"], "-n", str(case["n_predict"]),
                        "--temp", "0", "-t", "1", timeout=60)
            # stdout is the continuation plus one final newline; the golden file ends with the
            # harness's blank line. Compare the text itself.
            got = (case["prompt"] + r.stdout).rstrip("\n")
            want = case["expected"].rstrip("\n")
            c.check(f"{source}: {case['prompt']!r}", r.returncode == 0 and got == want,
                    f"rc={r.returncode} stderr={r.stderr.strip()!r}\n  got:  {got!r}\n  want: {want!r}")

    # F16 conversion: loads, and its logits stay within F16 rounding of the F32 ones.
    converted_f16 = os.path.join(tmp, "stories260K-f16.gguf")
    r = c.skiff("convert", "-m", os.path.join(models, "stories260K.bin"),
                "--tokenizer", os.path.join(models, "tok512.bin"), "--type", "f16", "-o", converted_f16)
    c.check("convert llama2.c -> gguf f16", r.returncode == 0, r.stderr)
    import numpy as np
    ids = "1 403 407 261 378 271 300 42 99 7"
    dumps = {}
    for name, path in (("f32", converted), ("f16", converted_f16)):
        out = os.path.join(tmp, name + ".logits")
        must("dump-logits", "-m", path, "--tokens", ids, "-o", out)
        dumps[name] = np.fromfile(out, dtype=np.float32)
    diff = float(np.abs(dumps["f32"] - dumps["f16"]).max())
    c.check(f"f16 logits within 0.05 of f32 (max diff {diff:.4f})", 0 < diff < 0.05, f"max diff {diff}")
    size_ratio = os.path.getsize(converted_f16) / os.path.getsize(converted)
    c.check(f"f16 file is about half the f32 file ({size_ratio:.2f})", 0.4 < size_ratio < 0.65, str(size_ratio))

    # The converted file through an independent reader and forward pass.
    import gguf_writer as gw
    import llama_reference as ref
    g = gw.read_gguf(converted)
    cfg = ref.config_from_gguf(g)
    weights = ref.weights_from_gguf(g)
    tokens = c.skiff("tokenize", "-m", converted, "-p", golden[0]["prompt"]).stdout.split()
    ids = [int(t) for t in tokens]
    n_new = 30
    for _ in range(n_new):
        logits = ref.forward(cfg, weights, ids)
        ids.append(int(np.argmax(logits[-1])))
    r = c.skiff("generate", "-m", converted, "-p", golden[0]["prompt"], "-n", str(n_new), "--temp", "0")
    skiff_ids = c.skiff("tokenize", "-m", converted, "-p", golden[0]["prompt"] + r.stdout.rstrip("\n")).stdout.split()
    c.check("converted gguf: independent reader + reference forward gives skiff's greedy tokens",
            [int(t) for t in skiff_ids] == ids, f"reference {ids}\n  skiff {skiff_ids}")

    return c.finish()


if __name__ == "__main__":
    sys.exit(main())

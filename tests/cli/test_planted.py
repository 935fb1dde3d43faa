#!/usr/bin/python3
"""The planted early exit benchmark setting (issue 16): `skiff synth --planted-exit E
--planted-scale S` and `skiff convert --first-layers E IN OUT`.

- synth: for every --type, the planted file differs from the plain one (same seed) in exactly
  the attn_output and ffn_down matrices of layers >= E, whose values are S times the plain
  ones (up to quantization); every other tensor is byte-identical. Bad E / S are one-line errors.
- convert --first-layers: the output holds every metadata key of the input with block_count = E,
  the non-layer tensors and blk.0..E-1, bytes unchanged; skiff's greedy text on it equals
  `generate --exit-layer E` on the full model (LayerSkip-trained built-in model and a planted
  synthetic one). Bad input is a one-line error.

Run: /usr/bin/python3 tests/cli/test_planted.py --skiff build/skiff --shared ../shared
Prints one line per case and ends with "N passed, M failed"; exit code 0 only when all pass.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
from harness import one_line_error, setup  # noqa: E402
from gguf_writer import read_gguf  # noqa: E402

TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_K", "q6_K", "q4_k_m"]
PROMPTS = ["Once upon a time", "Tom and his dog Max went to the beach. The sun was hot and"]


def main() -> int:
    args, c = setup()
    tmp = tempfile.mkdtemp(prefix="skiff-planted-")
    try:
        return run(args, c, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args, c, tmp: str) -> int:
    def skiff(*argv, timeout=300):
        return c.skiff(*argv, timeout=timeout)

    # --- synth --planted-exit / --planted-scale ------------------------------------------
    # "tiny": 2 layers, so E = 1 plants layer 1 and leaves layer 0 alone.
    scale = 0.25
    planted_names = {"blk.1.attn_output.weight", "blk.1.ffn_down.weight"}
    for t in TYPES:
        plain_path, planted_path = os.path.join(tmp, f"plain-{t}.gguf"), os.path.join(tmp, f"planted-{t}.gguf")
        r1 = skiff("synth", "--shape", "tiny", "--type", t, "-o", plain_path, "-t", "2")
        r2 = skiff("synth", "--shape", "tiny", "--type", t, "-o", planted_path, "-t", "2",
                   "--planted-exit", "1", "--planted-scale", str(scale))
        if not c.check(f"synth {t} plain and planted", r1.returncode == 0 and r2.returncode == 0,
                       r1.stderr + r2.stderr):
            continue
        plain, planted = read_gguf(plain_path), read_gguf(planted_path)
        c.check(f"{t}: same tensor list", list(plain.tensors) == list(planted.tensors))
        c.check(f"{t}: planted keys", planted.metadata.get("skiff.synth.planted_exit") == 1
                and abs(planted.metadata.get("skiff.synth.planted_scale", 0) - scale) < 1e-7
                and "skiff.synth.planted_exit" not in plain.metadata)
        same = [n for n in plain.tensors if plain.tensors[n].data == planted.tensors[n].data]
        c.check(f"{t}: every other tensor byte-identical", set(plain.tensors) - set(same) == planted_names,
                f"differing: {sorted(set(plain.tensors) - set(same))}")
        for name in sorted(planted_names):
            a, b = plain.tensor_values(name), planted.tensor_values(name)
            ratio = float(np.linalg.norm(b) / np.linalg.norm(a))
            rel = float(np.linalg.norm(b - scale * a) / np.linalg.norm(scale * a))
            exact = t == "f32"
            c.check(f"{t}: {name} scaled by {scale}",
                    (np.array_equal(b, np.float32(scale) * a) if exact else abs(ratio - scale) < 0.01 * scale
                     and rel < 0.2), f"norm ratio {ratio}, relative error {rel}")
        if t not in ("f16", "q8_0"):
            os.remove(plain_path)
            os.remove(planted_path)

    # Self-speculation from the planted exit accepts far more drafts than on the plain model
    # (random weights: ~10% there) and still prints plain decoding's text.
    model = os.path.join(tmp, "planted-f16.gguf")
    strong = os.path.join(tmp, "planted-0.03.gguf")
    r = skiff("synth", "--shape", "tiny", "-o", strong, "-t", "2", "--planted-exit", "1", "--planted-scale", "0.03")
    c.check("synth --planted-scale 0.03", r.returncode == 0, r.stderr)
    for path, lo, hi in [(os.path.join(tmp, "plain-f16.gguf"), 0.0, 0.3), (strong, 0.75, 1.0)]:
        base = ["generate", "-m", path, "-p", PROMPTS[0], "-n", "48", "--temp", "0", "-t", "1"]
        full = skiff(*base)
        spec = skiff(*base, "--self-spec", "1", "--draft-max", "4", "--draft-p-min", "0")
        m = re.search(r"acceptance ([0-9.]+)%", spec.stderr)
        rate = float(m.group(1)) / 100 if m else -1
        c.check(f"{os.path.basename(path)}: self-spec 1 == plain, acceptance {rate:.2f} in [{lo}, {hi}]",
                full.returncode == 0 and spec.stdout == full.stdout and lo <= rate <= hi, spec.stderr)

    out = os.path.join(tmp, "x.gguf")
    for argv, what in [
        (["--planted-exit", "0"], "exit 0"),
        (["--planted-exit", "2"], "exit = layers"),
        (["--planted-exit", "-1"], "negative exit"),
        (["--planted-exit", "1", "--planted-scale", "0"], "scale 0"),
        (["--planted-exit", "1", "--planted-scale", "-0.5"], "negative scale"),
        (["--planted-exit", "1", "--planted-scale", "nan"], "scale nan"),
        (["--planted-scale", "0.5"], "scale without exit"),
        (["--shape", "small", "--planted-exit", "8"], "small: exit 8 of 8 layers"),
    ]:
        shape = [] if "--shape" in argv else ["--shape", "tiny"]
        r = skiff("synth", *shape, "-o", out, *argv)
        c.check(f"synth error: {what}", one_line_error(r) and "planted" in r.stderr and not os.path.exists(out),
                f"rc={r.returncode} {r.stderr!r}")
    r = skiff("synth", "--shape", "tiny", "-o", out, "--planted-exit", "x")
    c.check("synth error: exit not a number", one_line_error(r, None), r.stderr)

    # --- convert --first-layers ----------------------------------------------------------
    layerskip = os.path.join(REPO, "models", "stories3M-layerskip.gguf")  # 8 layers, tied head
    cases = [(layerskip, 3, PROMPTS), (layerskip, 5, PROMPTS[:1]), (model, 1, PROMPTS[:1]),
             (os.path.join(tmp, "planted-q8_0.gguf"), 1, PROMPTS[1:])]
    for src, e, prompts in cases:
        label = f"{os.path.basename(src)} E={e}"
        dst = os.path.join(tmp, f"first{e}-{os.path.basename(src)}")
        r = skiff("convert", "--first-layers", str(e), src, dst)
        if not c.check(f"convert --first-layers {label}", r.returncode == 0 and os.path.exists(dst), r.stderr):
            continue
        a, b = read_gguf(src), read_gguf(dst)
        n = a.metadata["llama.block_count"]
        c.check(f"{label}: block_count {e}", b.metadata["llama.block_count"] == e)
        c.check(f"{label}: every other key unchanged",
                {k: v for k, v in a.metadata.items() if k != "llama.block_count"}
                == {k: v for k, v in b.metadata.items() if k != "llama.block_count"} and a.types == b.types)
        want = [k for k in a.tensors if not k.startswith("blk.") or int(k.split(".")[1]) < e]
        c.check(f"{label}: tensors = non-layer + blk.0..{e - 1} (of {n})", list(b.tensors) == want,
                f"{list(b.tensors)[:8]}")
        c.check(f"{label}: tensor bytes unchanged",
                all(a.tensors[k].data == b.tensors[k].data and a.tensors[k].ggml_type == b.tensors[k].ggml_type
                    for k in want))
        for p in prompts:
            gen = ["generate", "-p", p, "-n", "48", "--temp", "0", "-t", "1"]
            exit_run = skiff(*gen, "-m", src, "--exit-layer", str(e))
            cut = skiff(*gen, "-m", dst)
            c.check(f"{label}: truncated model == --exit-layer {e} ({p[:12]!r})",
                    exit_run.returncode == 0 and cut.returncode == 0 and cut.stdout == exit_run.stdout
                    and len(cut.stdout) > 10, f"{cut.stdout!r} vs {exit_run.stdout!r} {cut.stderr}")

    # -m IN -o OUT works too, and the truncated model drafts for its full model.
    dst = os.path.join(tmp, "first3-m.gguf")
    r = skiff("convert", "--first-layers", "3", "-m", layerskip, "-o", dst)
    c.check("convert --first-layers with -m/-o", r.returncode == 0
            and open(dst, "rb").read() == open(os.path.join(tmp, "first3-stories3M-layerskip.gguf"), "rb").read(),
            r.stderr)
    gen = ["generate", "-m", layerskip, "-p", PROMPTS[0], "-n", "48", "--temp", "0", "-t", "1"]
    plain, drafted = skiff(*gen), skiff(*gen, "--draft-model", dst, "--draft-max", "3")
    c.check("truncated model as --draft-model gives plain decoding's text",
            plain.returncode == 0 and drafted.stdout == plain.stdout, drafted.stderr)

    notgguf = os.path.join(tmp, "not.gguf")
    with open(notgguf, "w") as f:
        f.write("hello")
    for argv, what in [
        (["--first-layers", "0", layerskip, out], "E = 0"),
        (["--first-layers", "8", layerskip, out], "E = layers"),
        (["--first-layers", "-2", layerskip, out], "negative E"),
        (["--first-layers", "2", notgguf, out], "not a GGUF"),
        (["--first-layers", "2", layerskip], "no output"),
        (["--first-layers", "2", layerskip, out, "--type", "f16"], "--type"),
        ([layerskip, out], "IN OUT without --first-layers"),
    ]:
        r = skiff("convert", *argv)
        c.check(f"convert error: {what}", one_line_error(r) and not os.path.exists(out),
                f"rc={r.returncode} {r.stderr!r}")
    return c.finish()


if __name__ == "__main__":
    sys.exit(main())

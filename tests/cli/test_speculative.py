#!/usr/bin/python3
"""Early exit and speculative decoding through skiff's CLI.

- `generate --self-spec E --draft-max D` (every E in 1..L-1), `--lookup N` and
  `--draft-model FILE` print exactly what plain greedy `generate` prints, also when the context
  fills up (-c); `--exit-layer L` is plain decoding, `--exit-layer E` runs.
- Sampling with a seed is reproducible.
- Bad combinations are one-line errors with exit code 1: E >= L, E = 0, D = 0, N = 0, a draft
  model with another vocabulary, two strategies at once (--self-spec with --lookup is one:
  lookup first), --draft-max without a strategy, --draft-adaptive without --self-spec or with
  --draft-p-min, --draft-head without --self-spec or of another type than q8_0 / q4_0.
  --draft-adaptive, --self-spec --lookup, --draft-head q8_0 / q4_0, --draft-copy q8_0 / q4_0 and
  --dynamic-exit give plain decoding's text; --dynamic-exit without --self-spec or with
  --draft-adaptive, --draft-copy without --self-spec, of another type or with an option of the
  shared-cache self-speculation are errors (for `generate` and `serve`).
- `skiff bench --self-spec E --draft-max D -o json` reports speedup, acceptance_rate, ar_tps,
  spec_tps (and identical text); `skiff sweep` writes md/csv/json and an SVG heat-map.

Run: /usr/bin/python3 tests/cli/test_speculative.py --skiff build/skiff --shared ../shared
Prints one line per case and ends with "N passed, M failed"; exit code 0 only when all pass.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
from harness import one_line_error, setup  # noqa: E402

PROMPTS = ["Once upon a time", "Tom and his dog Max went to the beach. The sun was hot and"]
LAYERS = 5  # stories260K


def main() -> int:
    args, c = setup()
    stories = os.path.join(REPO, "models", "stories260K.gguf")

    def skiff(*argv, timeout=120):
        # Every case runs on stories260K (5 layers), whatever the built-in default model is.
        argv = [argv[0], "-m", stories, *argv[1:]] if "-m" not in argv else list(argv)
        return c.skiff(*argv, timeout=timeout)

    # Greedy: every strategy prints plain decoding's text.
    for prompt in PROMPTS:
        for ctx in ([], ["-c", "40"]):
            base = ["generate", "-p", prompt, "-n", "80", "--temp", "0", "-t", "1", *ctx]
            plain = skiff(*base)
            c.check(f"plain {prompt[:12]!r} {ctx}", plain.returncode == 0, plain.stderr)
            variants = [["--self-spec", str(e), "--draft-max", str(d)]
                        for e in range(1, LAYERS) for d in (1, 3, 8)]
            variants += [["--self-spec", "3", "--draft-max", "6", "--draft-p-min", "0.7"],
                         ["--lookup", "2", "--draft-max", "5"], ["--lookup", "4"],
                         ["--self-spec", "3", "--draft-max", "8", "--draft-adaptive"],
                         ["--self-spec", "2", "--draft-max", "6", "--lookup", "3"],
                         ["--self-spec", "4", "--draft-max", "8", "--draft-adaptive", "--lookup", "2"],
                         ["--self-spec", "2", "--draft-max", "4", "--draft-head", "q8_0"],
                         ["--self-spec", "3", "--draft-max", "6", "--draft-head", "q4_0", "--lookup", "2"],
                         ["--self-spec", "1", "--draft-max", "4", "--dynamic-exit"],
                         ["--self-spec", "3", "--draft-max", "3", "--dynamic-exit", "--draft-head", "q8_0"],
                         ["--self-spec", "2", "--draft-max", "4", "--draft-copy", "q8_0"],
                         ["--self-spec", "3", "--draft-max", "6", "--draft-copy", "q4_0", "--draft-p-min", "0.5"],
                         ["--draft-model", os.path.join(REPO, "models", "stories260K.gguf")],
                         ["--draft-model", os.path.join(args.shared, "models", "peer", "stories260K.gguf"),
                          "--draft-max", "7"],
                         ["--exit-layer", str(LAYERS)]]
            for v in variants:
                r = skiff(*base, *v)
                c.check(f"{' '.join(v)} == plain ({prompt[:12]!r} {ctx})",
                        r.returncode == 0 and r.stdout == plain.stdout,
                        f"rc={r.returncode} {r.stderr.strip()!r}\n  got:  {r.stdout!r}\n  want: {plain.stdout!r}")
            if ctx:
                c.check("plain run hit the context limit", "context full" in plain.stderr, plain.stderr)

    r = skiff("generate", "-p", PROMPTS[0], "-n", "20", "--temp", "0", "--exit-layer", "2")
    c.check("--exit-layer 2 runs", r.returncode == 0 and len(r.stdout) > 1, r.stderr)
    r = skiff("generate", "-p", PROMPTS[0], "-n", "20", "--temp", "0", "--self-spec", "2")
    c.check("self-spec reports acceptance", r.returncode == 0 and "acceptance" in r.stderr, r.stderr)

    # Sampling: a seed reproduces the text.
    for v in (["--self-spec", "3"], ["--lookup", "3"]):
        a = skiff("generate", "-p", PROMPTS[0], "-n", "60", "--temp", "0.9", "--seed", "7", *v)
        b = skiff("generate", "-p", PROMPTS[0], "-n", "60", "--temp", "0.9", "--seed", "7", *v)
        c.check(f"seeded sampling reproducible {' '.join(v)}",
                a.returncode == 0 and a.stdout == b.stdout and len(a.stdout) > 1, a.stderr)

    # Errors.
    tmp = tempfile.mkdtemp(prefix="skiff-spec-")
    import llama_reference as ref
    from llama_reference import LlamaConfig
    other = os.path.join(tmp, "other_vocab.gguf")
    cfg = LlamaConfig(dim=16, n_layers=2, n_heads=2, n_kv_heads=1, ffn=24, vocab=300, context_length=64)
    writer, _ = ref.build_writer(cfg, ref.random_weights(cfg, 3), None, 3)
    writer.write(other)
    bad = {
        "E = L": (["--self-spec", str(LAYERS)], "1..4"),
        "E > L": (["--self-spec", "9"], "1..4"),
        "E = 0": (["--self-spec", "0"], "1..4"),
        "D = 0": (["--self-spec", "2", "--draft-max", "0"], "--draft-max"),
        "lookup N = 0": (["--lookup", "0"], "--lookup"),
        "exit layer > L": (["--exit-layer", "6"], "exit layer"),
        "p-min > 1": (["--self-spec", "2", "--draft-p-min", "1.5"], "--draft-p-min"),
        "draft model with another vocabulary": (["--draft-model", other], "vocabulary"),
        "two strategies": (["--self-spec", "2", "--draft-model", other], "exclude"),
        "two strategies (lookup)": (["--exit-layer", "2", "--lookup", "2"], "exclude"),
        "--draft-adaptive without --self-spec": (["--lookup", "2", "--draft-adaptive"], "--draft-adaptive"),
        "--draft-adaptive with --draft-p-min": (["--self-spec", "2", "--draft-adaptive", "--draft-p-min", "0.5"],
                                                "--draft-adaptive"),
        "--draft-max alone": (["--draft-max", "3"], "--draft-max"),
        "--draft-head without --self-spec": (["--lookup", "2", "--draft-head", "q8_0"], "--draft-head"),
        "--draft-head f16": (["--self-spec", "2", "--draft-head", "f16"], "q8_0 or q4_0"),
        "--draft-head unknown type": (["--self-spec", "2", "--draft-head", "q9"], "not a type"),
        "--dynamic-exit without --self-spec": (["--lookup", "2", "--dynamic-exit"], "--dynamic-exit"),
        "--draft-copy without --self-spec": (["--draft-copy", "q8_0"], "needs --self-spec"),
        "--draft-copy f16": (["--self-spec", "2", "--draft-copy", "f16"], "q8_0 or q4_0"),
        "--draft-copy with --draft-head": (["--self-spec", "2", "--draft-copy", "q8_0", "--draft-head", "q8_0"],
                                           "--draft-head"),
        "--draft-copy with --lookup": (["--self-spec", "2", "--draft-copy", "q8_0", "--lookup", "2"], "--lookup"),
        "--dynamic-exit with --draft-adaptive": (["--self-spec", "2", "--dynamic-exit", "--draft-adaptive"],
                                                 "exclude"),
    }
    for name, (flags, word) in bad.items():
        r = skiff("generate", "-p", "hi", "-n", "5", "--temp", "0", *flags)
        c.check(f"error: {name}", one_line_error(r) and word in r.stderr,
                f"rc={r.returncode} stderr={r.stderr.strip()!r}")

    # The same checks for `serve` (before it listens).
    serve_bad = {
        "serve --draft-copy without --self-spec": (["--draft-copy", "q8_0"], "needs --self-spec"),
        "serve --draft-copy f16": (["--self-spec", "2", "--draft-copy", "f16"], "q8_0 or q4_0"),
        "serve --draft-copy with --draft-model": (["--self-spec", "2", "--draft-copy", "q8_0", "--draft-model",
                                                   os.path.join(REPO, "models", "stories260K.gguf")], "exclude"),
        "serve --draft-copy with --draft-head": (["--self-spec", "2", "--draft-copy", "q8_0", "--draft-head", "q8_0"],
                                                 "--draft-head"),
    }
    for name, (flags, word) in serve_bad.items():
        r = skiff("serve", "--port", "0", *flags, timeout=60)
        c.check(f"error: {name}", one_line_error(r) and word in r.stderr,
                f"rc={r.returncode} stderr={r.stderr.strip()!r}")

    # skiff bench: one run, both decoders, JSON.
    r = skiff("bench", "--self-spec", "3", "--draft-max", "4", "--lookup", "2", "--spec-tokens", "24",
              "-r", "1", "-t", "1", "-o", "json")
    try:
        rows = json.loads(r.stdout)
    except ValueError:
        rows = None
    ok = r.returncode == 0 and isinstance(rows, list) and len(rows) >= 2
    c.check("bench --self-spec -o json parses", ok, f"rc={r.returncode} {r.stderr.strip()!r} {r.stdout[:200]!r}")
    if ok:
        keys = {"speedup", "acceptance_rate", "ar_tps", "spec_tps", "mean_accepted_length", "draft_step_cost",
                "verify_cost", "task", "strategy"}
        c.check("bench json keys", all(keys <= set(row) for row in rows), str(rows[0].keys()))
        c.check("bench greedy text identical", all(row.get("identical") is True for row in rows))
        c.check("bench has both strategies and an 'all' row",
                {row["strategy"] for row in rows} == {"self-spec", "lookup"} and
                any(row["task"] == "all" for row in rows))
        c.check("bench numbers sane", all(row["ar_tps"] > 0 and row["spec_tps"] > 0 and
                                          0 <= row["acceptance_rate"] <= 1 for row in rows))
    r = skiff("bench", "--self-spec", "3", "--draft-max", "2", "--spec-tokens", "16", "-r", "1", "-t", "1")
    c.check("bench markdown", r.returncode == 0 and "| self-spec E=3 |" in r.stdout, r.stderr + r.stdout[:300])
    r = skiff("bench", "--self-spec", "5", "--spec-tokens", "16", "-r", "1")
    c.check("bench error: E = L", one_line_error(r), r.stderr)

    # skiff sweep: files and their contents.
    prefix = os.path.join(tmp, "sweep")
    r = skiff("sweep", "--exit-layers", "2,4", "--draft-max", "1,3", "-n", "16", "-t", "1", "-o", prefix)
    c.check("sweep runs", r.returncode == 0, r.stderr)
    if r.returncode == 0:
        files = [prefix + ext for ext in (".md", ".csv", ".json", ".svg")]
        c.check("sweep wrote md/csv/json/svg", all(os.path.getsize(f) > 0 for f in files))
        rows = json.load(open(prefix + ".json"))
        cells = {(row["exit_layer"], row["draft_max"]) for row in rows if row["task"] == "all"}
        c.check("sweep json covers the grid", cells == {(2, 1), (2, 3), (4, 1), (4, 3)}, str(cells))
        c.check("sweep greedy text identical", all(row["identical"] for row in rows))
        csv_lines = open(prefix + ".csv").read().strip().splitlines()
        c.check("sweep csv rows", csv_lines[0].startswith("exit_layer,draft_max") and len(csv_lines) == 1 + len(rows))
        try:
            svg = ET.parse(prefix + ".svg").getroot()
            rects = [e for e in svg.iter() if e.tag.endswith("rect")]
            c.check("sweep svg is a heat-map", svg.tag.endswith("svg") and len(rects) == 1 + 4, str(len(rects)))
        except ET.ParseError as e:
            c.check("sweep svg parses", False, str(e))
        c.check("sweep md has the speedup grid", "| E \\ D |" in open(prefix + ".md").read())
    r = skiff("sweep", "--exit-layers", "7", "-n", "4", "-o", prefix)
    c.check("sweep error: E >= L", one_line_error(r), r.stderr)

    return c.finish()


if __name__ == "__main__":
    sys.exit(main())

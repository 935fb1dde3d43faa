#!/usr/bin/python3
"""`skiff tokenize` with byte-level BPE vocabularies.

Every case of llama.cpp's test vectors (models/vocab/ggml-vocab-*.gguf.inp/.out: llama-bpe,
gpt-2, starcoder, refact, falcon, mpt; ids without BOS, special tokens not parsed) through
the CLI; the Llama 3 chat prompt from models/MANIFEST.md with special tokens parsed (the
default) and the same through the Hugging Face tokenizer.json; malformed tokenizer.json is a
one-line error.

Run: /usr/bin/python3 tests/cli/test_tokenize_bpe.py --skiff build/skiff --shared ../shared
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import one_line_error, setup  # noqa: E402

VOCABS = ["llama-bpe", "gpt-2", "starcoder", "refact", "falcon", "mpt"]
CHAT = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant"
        "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>"
        "assistant<|end_header_id|>\n\n")
CHAT_IDS = ("128000 128006 9125 128007 271 2675 527 264 11190 18328 128009 128006 882 128007 271 "
            "9906 128009 128006 78191 128007 271")


def read_cases(path: str) -> list[tuple[bytes, str]]:
    with open(path + ".inp", "rb") as f:
        texts = f.read().split(b"\n__ggml_vocab_test__\n")
    if texts and texts[-1] == b"":
        texts.pop()
    with open(path + ".out") as f:
        outs = [" ".join(line.split()) for line in f.read().split("\n")]
    return list(zip(texts, outs[: len(texts)]))


def main() -> int:
    args, c = setup()
    vocab_dir = os.path.join(args.shared, "models", "vocab")
    with tempfile.TemporaryDirectory() as tmp:
        # Under the sanitizers (make test-asan) every 4th vector: one process per vector is the
        # slowest test there, and every tokenizer path is still taken; the release build runs all.
        step = 4 if os.environ.get("SKIFF_SANITIZED") else 1
        jobs = []
        for name in VOCABS:
            gguf = os.path.join(vocab_dir, f"ggml-vocab-{name}.gguf")
            for i, (text, ids) in enumerate(read_cases(gguf)):
                if i % step:
                    continue
                path = os.path.join(tmp, f"{name}-{i}.txt")
                with open(path, "wb") as f:
                    f.write(text)
                jobs.append((name, i, gguf, path, ids))

        def run(job):
            name, i, gguf, path, ids = job
            r = c.skiff("tokenize", "-m", gguf, "-f", path, "--no-bos", "--no-parse-special", timeout=60)
            return name, i, r, ids

        failures: dict[str, list[str]] = {name: [] for name in VOCABS}
        counts = {name: 0 for name in VOCABS}
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            for name, i, r, ids in pool.map(run, jobs):
                counts[name] += 1
                if r.returncode != 0 or r.stdout.strip() != ids:
                    failures[name].append(f"case {i}: got '{r.stdout.strip()}{r.stderr.strip()}' want '{ids}'")
        for name in VOCABS:
            which = f"all {counts[name]}" if step == 1 else f"{counts[name]} (every {step}th)"
            c.check(f"{name}: {which} llama.cpp cases",
                    counts[name] >= 40 // step and not failures[name],
                    "; ".join(failures[name][:3]))

        llama3 = os.path.join(vocab_dir, "ggml-vocab-llama-bpe.gguf")
        r = c.skiff("tokenize", "-m", llama3, "-p", CHAT, "--no-bos")
        c.check("Llama 3 chat prompt, special tokens parsed", r.stdout.strip() == CHAT_IDS, r.stdout + r.stderr)
        r = c.skiff("tokenize", "-m", llama3, "-p", "Hello")
        c.check("Llama 3 adds BOS", r.stdout.strip() == "128000 9906", r.stdout + r.stderr)
        r = c.skiff("tokenize", "-m", llama3, "-p", "<|eot_id|>", "--no-bos", "--no-parse-special")
        c.check("--no-parse-special keeps special text as text", "128009" not in r.stdout.split() and r.returncode == 0,
                r.stdout + r.stderr)
        hf = ["--hf-tokenizer", os.path.join(vocab_dir, "llama3-tokenizer.json"),
              "--hf-config", os.path.join(vocab_dir, "llama3-tokenizer_config.json")]
        r = c.skiff("tokenize", *hf, "-p", CHAT, "--no-bos")
        c.check("tokenizer.json gives the same chat ids", r.stdout.strip() == CHAT_IDS, r.stdout + r.stderr)

        bad = os.path.join(tmp, "bad.json")
        with open(bad, "w") as f:
            f.write('{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [')
        r = c.skiff("tokenize", "--hf-tokenizer", bad, "-p", "a")
        c.check("malformed tokenizer.json is a one-line error", one_line_error(r) and "bad.json" in r.stderr, r.stderr)
        with open(bad, "w") as f:
            f.write('{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": '
                    '{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "x+"}}, '
                    '{"type": "ByteLevel", "use_regex": false}]}}')
        r = c.skiff("tokenize", "--hf-tokenizer", bad, "-p", "a")
        c.check("unknown pre-tokenizer regex is a one-line error naming it",
                one_line_error(r) and "x+" in r.stderr, r.stderr)
    return c.finish()


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Differential check of `skiff tokenize` against llama.cpp's llama-tokenize (a dev tool, not
a ctest: it needs the peer build). For each vocabulary: long random texts mixing ASCII,
Latin/Greek/CJK letters, non-ASCII digits and whitespace, punctuation, marks, emoji,
apostrophe contractions, private-use and unassigned code points (special tokens not parsed);
then random bytes (invalid UTF-8 included) mixed with special-token text, with and without
special-token parsing and BOS. Prints one line per text and the number that differ.

Usage: scripts/diff_tokenize_llamacpp.py [--skiff build/skiff] [--shared ../shared]
       [--peer ~/.cache/skiff-peers/llama.cpp-c392e50/build/bin] [vocab names...]
Also checks the qwen2 and smaug-bpe pre-tokenizers by patching tokenizer.ggml.pre in copies
of the gpt-2 and llama-bpe vocabularies (same-length names).
"""
import argparse
import os
import random
import subprocess
import sys
import tempfile

POOLS = [list(range(0x20, 0x7F)) * 3, [0x20] * 20,
         [0x0A, 0x0D, 0x09, 0x0B, 0x0C, 0x85, 0xA0, 0x3000, 0x2009, 0x1680, 0x1C, 0x1F],
         list(range(0x30, 0x3A)) * 2, list(range(0xC0, 0x250)), list(range(0x370, 0x3FF)),
         list(range(0x4E00, 0x4E40)), [0x0660, 0x0661, 0x2160, 0x00B2, 0xFF10, 0x1D7CE],
         list(range(0x2010, 0x2030)), list(range(0x300, 0x310)), [0x27] * 10,
         [ord(c) for c in "sStTmMdDrReEvVlL"], list(range(0x1F600, 0x1F610)),
         [0xE000, 0xFFFD, 0x378, 0x0600, 0xAD, 0x200B, 0xFEFF]]
SPECIALS = {"llama-bpe": [b"<|eot_id|>", b"<|begin_of_text|>", b"<|start_header_id|>"],
            "smaug": [b"<|eot_id|>"], "falcon": [b"<|endoftext|>", b">>TITLE<<"],
            "starcoder": [b"<fim_prefix>", b"<|endoftext|>"], "refact": [b"<fim_prefix>", b"<|endoftext|>"]}
WORDS = [b"hello", b" world", b"'s", b"  ", b"\n", b"123456", b"\xc3\xa9t\xc3\xa9", b"!?", b"\xe4\xb8\xad", b" <", b"|>"]


def ids(out: bytes) -> list[str]:
    return out.decode(errors="replace").replace("[", " ").replace("]", " ").replace(",", " ").split()


def main() -> int:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser()
    ap.add_argument("--skiff", default=os.path.join(root, "build", "skiff"))
    ap.add_argument("--shared", default=os.path.join(root, "..", "shared"))
    ap.add_argument("--peer", default=os.path.expanduser("~/.cache/skiff-peers/llama.cpp-c392e50/build/bin"))
    ap.add_argument("vocabs", nargs="*",
                    default=["llama-bpe", "gpt-2", "starcoder", "refact", "falcon", "mpt", "qwen2", "smaug"])
    a = ap.parse_args()
    env = dict(os.environ, LD_LIBRARY_PATH=a.peer)
    vocab_dir = os.path.join(a.shared, "models", "vocab")
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for src, new, name in [("gpt-2", b"qwen2", "qwen2"), ("llama-bpe", b"smaug-bpe", "smaug")]:
            data = open(os.path.join(vocab_dir, f"ggml-vocab-{src}.gguf"), "rb").read()
            key = b"tokenizer.ggml.pre"
            at = data.index(src.encode(), data.index(key) + len(key))
            with open(os.path.join(tmp, f"ggml-vocab-{name}.gguf"), "wb") as f:
                f.write(data[:at] + new + data[at + len(src):])

        def compare(label, gguf, path, flags):
            nonlocal bad
            p = subprocess.run([os.path.join(a.peer, "llama-tokenize"), "-m", gguf, "-f", path, "--ids",
                                "--log-disable", "--no-escape", *flags], capture_output=True, env=env)
            s = subprocess.run([a.skiff, "tokenize", "-m", gguf, "-f", path, *flags], capture_output=True)
            x, y = ids(p.stdout), ids(s.stdout)
            if x == y:
                print(f"ok   {label} ({len(x)} ids)")
                return
            bad += 1
            k = next((i for i in range(min(len(x), len(y))) if x[i] != y[i]), min(len(x), len(y)))
            print(f"DIFF {label} at id {k}: llama.cpp {x[max(0, k - 3):k + 5]} skiff {y[max(0, k - 3):k + 5]}")

        for name in a.vocabs:
            gguf = os.path.join(vocab_dir, f"ggml-vocab-{name}.gguf")
            if not os.path.exists(gguf):
                gguf = os.path.join(tmp, f"ggml-vocab-{name}.gguf")
            rng = random.Random(1)
            for t in range(4):
                text = "".join(chr(rng.choice(rng.choice(POOLS))) for _ in range(3000))
                path = os.path.join(tmp, "text.txt")
                with open(path, "wb") as f:
                    f.write(text.encode())
                compare(f"{name} text {t}", gguf, path, ["--no-bos", "--no-parse-special"])
            specials = SPECIALS.get(name, [b"<|endoftext|>"])
            for t in range(2):
                parts = []
                for _ in range(400):
                    k = rng.random()
                    if k < 0.1:
                        parts.append(rng.choice(specials))
                    elif k < 0.3:
                        parts.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4))))
                    else:
                        parts.append(rng.choice(WORDS))
                path = os.path.join(tmp, "bytes.txt")
                with open(path, "wb") as f:
                    f.write(b"".join(parts))
                compare(f"{name} bytes {t} special", gguf, path, [])
                compare(f"{name} bytes {t} plain", gguf, path, ["--no-parse-special"])
    print(f"{bad} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

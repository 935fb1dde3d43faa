#!/usr/bin/python3
"""Peer check for Hugging Face loading (not part of the test suite; it needs llama.cpp):
writes a random tiny Llama-3.1-style checkpoint (F32, GQA, llama3 RoPE scaling, untied head)
with the real Llama 3 tokenizer.json, converts it with `skiff convert --hf`, and compares the
greedy text of llama.cpp's llama-simple on the converted GGUF with skiff's on the folder and
on the GGUF, for a few prompts.

  scripts/peer_check_hf.py [--skiff build/skiff] [--peer LLAMA_CPP_BIN] [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "reference"))
import hf_writer as hw  # noqa: E402

SHARED = os.path.join(HERE, "..", "..", "shared")
PROMPTS = ["Once upon a time", "The capital of France is", "def fibonacci(n):"]
N = 16


def normalize(text: str) -> str:
    """llama-simple renders control tokens (<|reserved_special_token_N|>) and prints the
    continuation right after the prompt; skiff prints nothing for control tokens, keeps the
    continuation's leading space and ends with a newline. Compare what is left."""
    return "".join(re.sub(r"<\|[a-z_0-9]+\|>", "", text).split())


def run(cmd) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)}:\n{p.stderr[-2000:]}")
    return p.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skiff", default=os.path.join(HERE, "..", "build", "skiff"))
    ap.add_argument("--peer")
    ap.add_argument("--keep")
    a = ap.parse_args()
    peer = a.peer or run(["bash", os.path.join(SHARED, "peers", "build-llamacpp.sh")]).strip()
    work = a.keep or tempfile.mkdtemp(prefix="skiff-peer-hf-")
    ckpt = os.path.join(work, "ckpt")
    cfg = hw.HfConfig(hidden=128, layers=3, heads=8, kv_heads=2, ffn=256, vocab=128256,
                      rope_theta=500000.0, max_pos=4096,
                      rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    weights = hw.random_weights(cfg, 7)
    # Larger embeddings and head than the unit-variance default: well separated logits, so
    # greedy choices do not hinge on rounding differences between two engines.
    weights["lm_head.weight"] *= 4.0
    hw.write_checkpoint(ckpt, cfg, weights, generation_config={"bos_token_id": 128000,
                                                               "eos_token_id": [128001, 128008, 128009]})
    shutil.copy(os.path.join(SHARED, "models", "vocab", "llama3-tokenizer.json"),
                os.path.join(ckpt, "tokenizer.json"))
    shutil.copy(os.path.join(SHARED, "models", "vocab", "llama3-tokenizer_config.json"),
                os.path.join(ckpt, "tokenizer_config.json"))
    gguf = os.path.join(work, "converted-f32.gguf")
    run([a.skiff, "convert", "--hf", ckpt, "-o", gguf, "--type", "f32"])
    ok = True
    for prompt in PROMPTS:
        # llama-simple: greedy, BOS added, prints the prompt then the continuation (special
        # tokens rendered); skiff generate prints the continuation only.
        peer_out = run([os.path.join(peer, "llama-simple"), "-m", gguf, "-n", str(N), prompt])
        peer_text = peer_out.split(prompt, 1)[1] if prompt in peer_out else peer_out
        for model in (ckpt, gguf):
            text = run([a.skiff, "generate", "-m", model, "-p", prompt, "-n", str(N), "--temp", "0"])
            same = normalize(peer_text) == normalize(text) and len(text) > 0
            ok &= same
            print(f"{'SAME' if same else 'DIFF'} {os.path.basename(model):20s} {prompt!r}\n"
                  f"  llama.cpp: {peer_text.strip()!r}\n  skiff:     {text!r}")
    print("all greedy texts equal" if ok else "texts differ")
    if not a.keep:
        shutil.rmtree(work)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Bad input through skiff's CLI: every defect must give a clean error, never a crash.

Run: /usr/bin/python3 tests/reference/test_cli_errors.py --skiff build/skiff --shared ../shared
(ctest runs it this way). Prints one line per case and ends with "N passed, M failed"; exit
code 0 only when nothing failed.

A small valid GGUF model is written with gguf_writer.py (positive control: `info` and
`generate` succeed on it), then broken: truncated at every 256-byte offset; tensor count,
metadata count, a tensor offset, a tensor type id, a dim corrupted in place; a tensor missing;
a tensor shape or a hyper-parameter that disagrees with the others; block_count larger than
the tensors present. For each broken file both `skiff info -m FILE` and
`skiff generate -m FILE -p hi -n 2` must exit with code 1 (not 0, not a signal) within 10 s
and print exactly one non-empty line to stderr beginning "error: ". Usage errors (unknown
flag or subcommand, a prompt longer than the context, bad dump-logits arguments) must exit
non-zero with an "error:" line. The wording of messages is skiff's; only their shape is tested.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_writer as gw  # noqa: E402
import llama_reference as ref  # noqa: E402
from llama_reference import LlamaConfig  # noqa: E402

TIMEOUT_S = 10
CFG = LlamaConfig(dim=16, n_layers=2, n_heads=2, n_kv_heads=1, ffn=24, vocab=300,
                  context_length=32)
SEED = 5


# ----------------------------------------------------------------------------------------------
# Running skiff
# ----------------------------------------------------------------------------------------------
def run(skiff: str, args) -> dict:
    t0 = time.monotonic()
    try:
        p = subprocess.run([skiff] + list(args), capture_output=True, timeout=TIMEOUT_S,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"rc": None, "stderr": "", "secs": TIMEOUT_S}
    return {"rc": p.returncode, "stderr": p.stderr.decode("utf-8", errors="replace"),
            "secs": time.monotonic() - t0}


def describe(r: dict) -> str:
    if r["rc"] is None:
        return f"no exit within {TIMEOUT_S}s"
    if r["rc"] < 0:
        return f"killed by signal {-r['rc']}"
    err = r["stderr"].strip().replace("\n", " | ")
    return f"rc={r['rc']} stderr={err[:200]!r}"


def clean_file_error(r: dict) -> bool:
    """Exit code 1, exactly one non-empty stderr line starting with 'error: '."""
    if r["rc"] != 1:
        return False
    lines = r["stderr"].splitlines()
    return len(lines) == 1 and lines[0].startswith("error: ") and lines[0][7:].strip() != ""


def usage_error(r: dict) -> bool:
    """Non-zero exit (not a signal) and an 'error:' line on stderr."""
    return (r["rc"] is not None and r["rc"] > 0 and
            any(line.startswith("error:") for line in r["stderr"].splitlines()))


def model_commands(path: str):
    return {"info": ["info", "-m", path],
            "generate": ["generate", "-m", path, "-p", "hi", "-n", "2"]}


# ----------------------------------------------------------------------------------------------
# Broken files
# ----------------------------------------------------------------------------------------------
def valid_writer(cfg: LlamaConfig = CFG, seed: int = SEED):
    writer, _ = ref.build_writer(cfg, ref.random_weights(cfg, seed), None, seed)
    return writer


def patch(buf: bytes, offset: int, fmt: str, value) -> bytes:
    b = bytearray(buf)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


def _align(n: int, a: int = 32) -> int:
    return (n + a - 1) // a * a


def broken_files(good: bytes, lay: gw.Layout) -> list:
    """(name, bytes) for every defect."""
    cases = []
    # (i) truncated: every 256-byte offset before the end of the last tensor's data, and one
    # byte short of it (the bytes after data_end are only padding).
    for n in list(range(0, lay.data_end, 256)) + [lay.data_end - 1]:
        cases.append((f"truncated to {n} bytes (of {len(good)})", good[:n]))

    n_tensors, n_kv = len(lay.tensors), len(lay.kv)
    # (ii) corrupted header fields
    cases.append(("bad magic", b"GGUX" + good[4:]))
    for v in (1, 99):
        cases.append((f"version {v}", patch(good, 4, "<I", v)))
    for v in (0, n_tensors + 1, 2**32 + n_tensors, 2**63):
        cases.append((f"tensor count {v} (real {n_tensors})",
                      patch(good, lay.tensor_count_offset, "<Q", v)))
    for v in (0, n_kv - 1, n_kv + 1, 2**32 + n_kv, 2**63):
        cases.append((f"metadata count {v} (real {n_kv})",
                      patch(good, lay.kv_count_offset, "<Q", v)))
    first_key = next(iter(lay.kv.values()))
    cases.append(("first key length 2^63", patch(good, first_key["key_len"], "<Q", 2**63)))
    cases.append(("metadata value type 99 (llama.embedding_length)",
                  patch(good, lay.kv["llama.embedding_length"]["type"], "<I", 99)))
    tokens = lay.kv["tokenizer.ggml.tokens"]["value"]
    cases.append(("tokenizer.ggml.tokens array count 2^62", patch(good, tokens + 4, "<Q", 2**62)))
    cases.append(("tokenizer.ggml.tokens element type 99", patch(good, tokens, "<I", 99)))

    q = lay.tensors["blk.0.attn_q.weight"]
    rel = struct.unpack_from("<Q", good, q["offset"])[0]
    cases.append(("tensor offset misaligned (blk.0.attn_q +1)", patch(good, q["offset"], "<Q", rel + 1)))
    cases.append(("tensor offset past end of file (blk.0.attn_q)",
                  patch(good, q["offset"], "<Q", _align(len(good)))))
    cases.append(("tensor offset 2^64-32 (offset+size overflows)",
                  patch(good, q["offset"], "<Q", 2**64 - 32)))
    last_name, last = list(lay.tensors.items())[-1]
    past = _align(len(good) - lay.data_start - last["nbytes"] + 1)
    cases.append((f"tensor data runs past end of file ({last_name} offset {past})",
                  patch(good, last["offset"], "<Q", past)))

    embd = lay.tensors["token_embd.weight"]
    for v, why in ((4, "removed Q4_2"), (99, "unknown"), (2**32 - 1, "unknown"),
                   (gw.Q8_0, "Q8_0 on rows of 16"), (gw.Q4_K, "Q4_K on rows of 16")):
        cases.append((f"tensor type {v} ({why}) for token_embd", patch(good, embd["type"], "<I", v)))
    cases.append(("tensor type 99 for blk.1.ffn_down",
                  patch(good, lay.tensors["blk.1.ffn_down.weight"]["type"], "<I", 99)))

    for v in (0, 5):
        cases.append((f"n_dims {v} for blk.0.attn_q", patch(good, q["n_dims"], "<I", v)))
    cases.append(("dim ne[0] 17 for blk.0.attn_q (file size unchanged)", patch(good, q["dims"][0], "<Q", 17)))
    cases.append(("dim ne[1] 0 for token_embd", patch(good, embd["dims"][1], "<Q", 0)))
    cases.append(("dim ne[1] 2^62 for token_embd (size overflows)", patch(good, embd["dims"][1], "<Q", 2**62)))
    cases.append(("dim ne[0] 2^63 for token_embd", patch(good, embd["dims"][0], "<Q", 2**63)))

    # (iii) missing tensors
    for name in ("blk.0.ffn_up.weight", "token_embd.weight", "blk.1.attn_norm.weight",
                 "output_norm.weight"):
        w = valid_writer()
        w.tensors = [t for t in w.tensors if t.name != name]
        cases.append((f"missing tensor {name}", w.serialize()[0]))

    # (iv) shapes that disagree with the hyper-parameters, and inconsistent hyper-parameters
    for name, dims in (("blk.0.attn_q.weight", [16, 20]), ("blk.1.attn_k.weight", [16, 16]),
                       ("blk.0.attn_v.weight", [8, 8]), ("blk.0.attn_output.weight", [16, 8]),
                       ("blk.1.ffn_down.weight", [32, 16]), ("blk.0.ffn_gate.weight", [16, 25]),
                       ("token_embd.weight", [16, 299]), ("output.weight", [16, 301]),
                       ("output_norm.weight", [15]), ("blk.0.ffn_norm.weight", [16, 2])):
        w = valid_writer()
        for t in w.tensors:
            if t.name == name:
                t.dims = dims
                t.data = gw.encode(np.zeros(dims[::-1], np.float32), gw.F32)[0]
        cases.append((f"wrong shape {name} {dims}", w.serialize()[0]))
    for key, value in (("llama.attention.head_count", 3), ("llama.attention.head_count", 0),
                       ("llama.attention.head_count_kv", 0), ("llama.attention.head_count_kv", 4),
                       ("llama.embedding_length", 20), ("llama.feed_forward_length", 25),
                       ("llama.rope.dimension_count", 7), ("llama.rope.dimension_count", 16),
                       ("llama.vocab_size", 301)):
        w = valid_writer()
        w.add_u32(key, value)
        cases.append((f"{key} = {value}", w.serialize()[0]))
    # vocabulary arrays that disagree with each other or with the embedding rows: a tokenizer
    # that can emit an id past the embedding, or index past the scores, must be refused
    tokens, scores, types = ref.llama_vocab(CFG.vocab + 1)
    w = valid_writer()
    w.add_array_str("tokenizer.ggml.tokens", tokens)
    w.add_array_f32("tokenizer.ggml.scores", scores)
    w.add_array_i32("tokenizer.ggml.token_type", types)
    cases.append((f"vocabulary of {len(tokens)} tokens, embedding rows {CFG.vocab}", w.serialize()[0]))
    tokens, scores, types = ref.llama_vocab(CFG.vocab)
    for key, add, value in (("tokenizer.ggml.scores", "add_array_f32", scores[:10]),
                            ("tokenizer.ggml.token_type", "add_array_i32", types[:10])):
        w = valid_writer()
        getattr(w, add)(key, value)
        cases.append((f"{key} has {len(value)} entries (embedding rows {CFG.vocab})", w.serialize()[0]))
    w = valid_writer()
    w.add_string("llama.embedding_length", "16")
    cases.append(("llama.embedding_length is a string", w.serialize()[0]))
    w = valid_writer()
    w.remove("llama.embedding_length")
    cases.append(("missing key llama.embedding_length", w.serialize()[0]))
    w = valid_writer()
    w.add_string("general.architecture", "gpt2")
    cases.append(("general.architecture gpt2", w.serialize()[0]))
    w = valid_writer()
    w.tensors.append(w.tensors[3])
    cases.append((f"duplicate tensor {w.tensors[3].name}", w.serialize()[0]))
    w = valid_writer()
    w.kv.append(w.kv[2])
    cases.append((f"duplicate metadata key {w.kv[2][0]}", w.serialize()[0]))

    # (v) more layers announced than present
    for n in (CFG.n_layers + 1, 2**31):
        w = valid_writer()
        w.add_u32("llama.block_count", n)
        cases.append((f"llama.block_count {n} (tensors for {CFG.n_layers})", w.serialize()[0]))
    return cases


# ----------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skiff", required=True, help="path to the skiff binary")
    ap.add_argument("--shared", required=True, help="path to the shared folder (unused here)")
    args = ap.parse_args()
    skiff = os.path.abspath(args.skiff)
    passed = failed = 0

    def record(ok: bool, name: str, detail: str):
        nonlocal passed, failed
        passed, failed = passed + ok, failed + (not ok)
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)

    if not os.access(skiff, os.X_OK):
        record(False, "skiff binary", f"not found or not executable: {skiff}")
        print(f"{passed} passed, {failed} failed")
        return 1

    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="skiff_cli_") as tmp:
        good, lay = valid_writer().serialize()
        # self-check: the valid file reads back with the independent reader
        g = gw.parse_gguf(good)
        assert len(g.tensors) == len(lay.tensors) and g.metadata["llama.block_count"] == CFG.n_layers
        good_path = os.path.join(tmp, "tiny.gguf")
        with open(good_path, "wb") as f:
            f.write(good)

        jobs = []  # (kind, name, command, args)
        for cmd, a in model_commands(good_path).items():
            jobs.append(("ok", f"valid tiny model ({len(good)} bytes)", cmd, a))

        cases = broken_files(good, lay)
        for i, (name, data) in enumerate(cases):
            path = os.path.join(tmp, f"bad_{i:03d}.gguf")
            with open(path, "wb") as f:
                f.write(data)
            for cmd, a in model_commands(path).items():
                jobs.append(("file", name, cmd, a))

        long_prompt = os.path.join(tmp, "long.txt")
        with open(long_prompt, "w") as f:
            f.write("once upon a time there was a little girl who liked to run. " * 20)
        tokens_ok = " ".join(str(t) for t in range(3, 10))
        out = os.path.join(tmp, "out.bin")
        usage = [
            ("unknown flag", ["generate", "--bogus"]),
            ("unknown subcommand", ["frobnicate"]),
            ("prompt longer than the context (32)", ["generate", "-m", good_path, "-f", long_prompt, "-n", "2"]),
            ("model file does not exist", ["generate", "-m", os.path.join(tmp, "nope.gguf"), "-p", "hi", "-n", "2"]),
            ("model path is a directory", ["info", "-m", tmp]),
            ("dump-logits token id >= vocab", ["dump-logits", "-m", good_path, "--tokens", "1 2 300", "-o", out]),
            ("dump-logits token id not a number", ["dump-logits", "-m", good_path, "--tokens", "1 x 3", "-o", out]),
            ("dump-logits negative token id", ["dump-logits", "-m", good_path, "--tokens", "1 -2 3", "-o", out]),
            ("dump-logits more tokens than the context", ["dump-logits", "-m", good_path, "--tokens",
                                                          " ".join(["5"] * 40), "-o", out]),
            (f"dump-logits --exit-layer {CFG.n_layers + 1} > block_count",
             ["dump-logits", "-m", good_path, "--tokens", tokens_ok, "--exit-layer", str(CFG.n_layers + 1), "-o", out]),
        ]
        for name, a in usage:
            jobs.append(("usage", name, a[0], a))

        workers = max(2, min(8, 2 * (os.cpu_count() or 1)))
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(lambda j: run(skiff, j[3]), jobs))

        # one line per case: group the info/generate runs of a file case together
        grouped = {}
        for (kind, name, cmd, _), r in zip(jobs, results):
            grouped.setdefault((kind, name), []).append((cmd, r))
        for (kind, name), runs in grouped.items():
            if kind == "ok":
                ok = all(r["rc"] == 0 for _, r in runs)
            elif kind == "file":
                ok = all(clean_file_error(r) for _, r in runs)
            else:
                ok = all(usage_error(r) for _, r in runs)
            shown = [f"{cmd}: {describe(r)}" for cmd, r in runs]
            slowest = max(r["secs"] for _, r in runs)
            record(ok, name, "; ".join(shown) + f" ({slowest:.2f}s)")

    print(f"({time.time() - t0:.1f}s)")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

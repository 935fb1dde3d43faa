#!/usr/bin/python3
"""Broken Hugging Face checkpoint folders through skiff's CLI: a clean error, never a crash.

Run: /usr/bin/python3 tests/reference/test_hf_errors.py --skiff build/skiff --shared ../shared
(ctest runs it this way). Prints one line per case and ends with "N passed, M failed"; exit
code 0 only when nothing failed.

A small valid folder is written with hf_writer.py (positive control: `info` and `dump-logits`
succeed on it), then broken one way per case: safetensors truncated, header length past the
file or absurdly large, offsets out of range, overlapping tensors, dtype/shape/byte counts that
disagree, an unknown or unsupported dtype, a missing tensor, config.json contradicting the
tensors, an unknown architecture, malformed config.json / index json / generation_config.json.
For each, `skiff info -m DIR` and `skiff dump-logits -m DIR --tokens "1 2 3"` must exit with
code 1 (not 0, not a signal) within 10 s and print exactly one stderr line, beginning
"error: " and containing the file and field named by the case.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_writer as hw  # noqa: E402
from hf_writer import HfConfig  # noqa: E402

TIMEOUT_S = 10
CFG = HfConfig(hidden=16, layers=2, heads=2, kv_heads=1, ffn=24, vocab=40, max_pos=32)
SEED = 3
ST = "model.safetensors"


def run(skiff: str, args) -> dict:
    try:
        p = subprocess.run([skiff] + list(args), capture_output=True, timeout=TIMEOUT_S,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"rc": None, "stderr": ""}
    return {"rc": p.returncode, "stderr": p.stderr.decode("utf-8", errors="replace")}


def describe(r: dict) -> str:
    if r["rc"] is None:
        return f"no exit within {TIMEOUT_S}s"
    if r["rc"] < 0:
        return f"killed by signal {-r['rc']}"
    return f"rc={r['rc']} stderr={r['stderr'].strip().replace(chr(10), ' | ')[:240]!r}"


# ----------------------------------------------------------------------------------------------
# The valid folder and ways to break it
# ----------------------------------------------------------------------------------------------
def write_valid(path: str, shards: int = 1):
    hw.write_checkpoint(path, CFG, hw.random_weights(CFG, SEED), "F32", shards, True,
                        generation_config={"bos_token_id": 1, "eos_token_id": [2, 3]})


def entries():
    """(Entry list, held) of the valid single-file checkpoint, for rewriting its header."""
    out = []
    for name, w in hw.random_weights(CFG, SEED).items():
        data, _ = hw.encode(w, "F32")
        out.append(hw.Entry(name, "F32", list(w.shape), data))
    return out


def header_of(es, edit):
    """The generated header dict for entries `es`, passed through edit(h) -> h."""
    h, at = {}, 0
    for e in es:
        h[e.name] = {"dtype": e.dtype, "shape": list(e.shape), "data_offsets": [at, at + len(e.data)]}
        at += len(e.data)
    return edit(h)


def rewrite_st(path, edit_header=None, es=None, raw=None):
    """Replaces model.safetensors: with `raw` bytes, or entries `es` (default: the valid ones)
    under a header edited by edit_header."""
    target = os.path.join(path, ST)
    if raw is not None:
        data = raw
    else:
        es = es if es is not None else entries()
        header = header_of(es, edit_header) if edit_header else None
        data, _ = hw.serialize(es, header=header)
    with open(target, "wb") as f:
        f.write(data)


def edit_json(path, name, edit):
    p = os.path.join(path, name)
    with open(p) as f:
        j = json.load(f)
    j = edit(j)
    with open(p, "w") as f:
        json.dump(j, f)


def write_text(path, name, text):
    with open(os.path.join(path, name), "w") as f:
        f.write(text)


def set_key(d, k, v):
    d[k] = v
    return d


def del_key(d, k):
    del d[k]
    return d


def cases():
    """(label, fragments the error line must contain, shards, mutate(path))."""
    good, lay = hw.serialize(entries())
    q = "model.layers.0.self_attn.q_proj.weight"
    up1 = "model.layers.1.mlp.up_proj.weight"
    out = []

    def add(label, fragments, mutate, shards=1):
        out.append((label, fragments, shards, mutate))

    # safetensors files
    for n in (0, 5, 8, lay.data_start - 3, lay.data_start + 100, len(good) - 1):
        add(f"model.safetensors truncated to {n} bytes", [ST], lambda p, n=n: rewrite_st(p, raw=good[:n]))
    add("header length past the file", [ST, "header length"],
        lambda p: rewrite_st(p, raw=struct.pack("<Q", len(good)) + good[8:]))
    add("header length 2^40", [ST, "header length"], lambda p: rewrite_st(p, raw=struct.pack("<Q", 2**40) + good[8:]))
    add("header length 2^64-1", [ST, "header length"],
        lambda p: rewrite_st(p, raw=struct.pack("<Q", 2**64 - 1) + good[8:]))
    add("header not JSON", [ST, "JSON"], lambda p: rewrite_st(p, raw=struct.pack("<Q", 8) + b"{\"a\":[1," + good[16:]))
    add("header a JSON array", [ST, "JSON object"],
        lambda p: rewrite_st(p, raw=struct.pack("<Q", 8) + b"[1,2,3] " + good[16:]))
    add("offsets past the data", [ST, q, "data_offsets"],
        lambda p: rewrite_st(p, lambda h: set_key(h, q, {**h[q], "data_offsets": [h[q]["data_offsets"][0],
                                                                                    len(good)]})))
    add("offsets [end, begin]", [ST, q, "data_offsets"],
        lambda p: rewrite_st(p, lambda h: set_key(h, q, {**h[q], "data_offsets": h[q]["data_offsets"][::-1]})))

    def overlap(h):
        b, e = h[q]["data_offsets"]
        h[q]["data_offsets"] = [b - 8, e - 8]
        return h
    add("overlapping tensors", [ST, q, "overlaps"], lambda p: rewrite_st(p, overlap))
    add("dtype F16 on F32 bytes", [ST, q, "bytes"],
        lambda p: rewrite_st(p, lambda h: set_key(h, q, {**h[q], "dtype": "F16"})))
    add("shape disagrees with the bytes", [ST, q, "bytes"],
        lambda p: rewrite_st(p, lambda h: set_key(h, q, {**h[q], "shape": [16, 15]})))
    add("negative dim", [ST, q, "shape"],
        lambda p: rewrite_st(p, lambda h: set_key(h, q, {**h[q], "shape": [-16, -16]})))
    add("unknown dtype Q4", [ST, q, "dtype"], lambda p: rewrite_st(p, lambda h: set_key(h, q, {**h[q], "dtype": "Q4"})))

    def as_i32(h):
        h[q]["dtype"] = "I32"
        return h
    add("dtype I32 (parsed, not supported)", [ST, q, "I32", "not supported"], lambda p: rewrite_st(p, as_i32))
    add("missing tensor", ["missing tensor", up1],
        lambda p: rewrite_st(p, es=[e for e in entries() if e.name != up1]))

    def wrong_shape(p):
        es = entries()
        for e in es:
            if e.name == q:
                e.shape, e.data = [16, 12], e.data[: 16 * 12 * 4]
        rewrite_st(p, es=es)
    add("tensor shape contradicts config", [ST, q, "[16, 12]", "[16, 16]"], wrong_shape)

    # config.json
    for key, value, frag in (("intermediate_size", 32, "mlp.gate_proj.weight"), ("hidden_size", 20, "embed_tokens"),
                             ("num_key_value_heads", 2, "k_proj.weight"), ("vocab_size", 41, "embed_tokens"),
                             ("num_hidden_layers", 3, "model.layers.2"), ("head_dim", 4, "q_proj.weight")):
        add(f"config {key} = {value} contradicts the tensors", [frag],
            lambda p, key=key, value=value: edit_json(p, "config.json", lambda j: set_key(j, key, value)))
    add("unknown architecture", ["config.json", "GPT2LMHeadModel"],
        lambda p: edit_json(p, "config.json", lambda j: set_key(j, "architectures", ["GPT2LMHeadModel"])))
    add("config.json not JSON", ["config.json", "JSON"], lambda p: write_text(p, "config.json", "{\"hidden_size\": 16,"))
    add("config.json a JSON list", ["config.json", "object"], lambda p: write_text(p, "config.json", "[1, 2]"))
    add("config.json missing hidden_size", ["config.json", "hidden_size"],
        lambda p: edit_json(p, "config.json", lambda j: del_key(j, "hidden_size")))
    add("config.json hidden_size a string", ["config.json", "hidden_size"],
        lambda p: edit_json(p, "config.json", lambda j: set_key(j, "hidden_size", "16")))
    add("config.json rms_norm_eps a string", ["config.json", "rms_norm_eps"],
        lambda p: edit_json(p, "config.json", lambda j: set_key(j, "rms_norm_eps", "1e-5")))
    add("config.json rope_scaling dynamic", ["config.json", "dynamic"],
        lambda p: edit_json(p, "config.json", lambda j: set_key(j, "rope_scaling", {"rope_type": "dynamic", "factor": 2.0})))
    add("config.json hidden_act gelu", ["config.json", "hidden_act"],
        lambda p: edit_json(p, "config.json", lambda j: set_key(j, "hidden_act", "gelu")))
    add("no config.json", ["config.json"], lambda p: os.remove(os.path.join(p, "config.json")))

    # the index of a sharded folder
    idx = "model.safetensors.index.json"
    add("index not JSON", [idx, "JSON"], lambda p: write_text(p, idx, "{\"weight_map\": "), shards=2)
    add("index without weight_map", [idx, "weight_map"],
        lambda p: edit_json(p, idx, lambda j: del_key(j, "weight_map")), shards=2)
    add("index names a missing file", ["model-00009-of-00009.safetensors"],
        lambda p: edit_json(p, idx, lambda j: set_key(j, "weight_map", {**j["weight_map"], q: "model-00009-of-00009.safetensors"})),
        shards=2)
    add("index names a file outside the folder", [idx, "../x.safetensors"],
        lambda p: edit_json(p, idx, lambda j: set_key(j, "weight_map", {**j["weight_map"], q: "../x.safetensors"})),
        shards=2)

    def wrong_shard(j):
        files = sorted(set(j["weight_map"].values()))
        j["weight_map"][q] = files[1] if j["weight_map"][q] == files[0] else files[0]
        return j
    add("index puts a tensor in the wrong shard", [idx, q], lambda p: edit_json(p, idx, wrong_shard), shards=2)
    add("index weight_map value a number", [idx, q],
        lambda p: edit_json(p, idx, lambda j: set_key(j, "weight_map", {**j["weight_map"], q: 7})), shards=2)

    # generation_config.json and the tokenizer
    add("generation_config eos_token_id out of range", ["generation_config.json", "eos_token_id"],
        lambda p: write_text(p, "generation_config.json", json.dumps({"eos_token_id": [2, 4000]})))
    add("generation_config eos_token_id a string", ["generation_config.json", "eos_token_id"],
        lambda p: write_text(p, "generation_config.json", json.dumps({"eos_token_id": "2"})))
    add("generation_config not JSON", ["generation_config.json"],
        lambda p: write_text(p, "generation_config.json", "{"))
    add("tokenizer.json malformed", ["tokenizer.json"], lambda p: write_text(p, "tokenizer.json", "{\"model\": "))
    add("no safetensors", [".safetensors"], lambda p: os.remove(os.path.join(p, ST)))
    return out


def commands(path):
    return {"info": ["info", "-m", path],
            "dump-logits": ["dump-logits", "-m", path, "--tokens", "1 2 3", "-o", os.path.join(path, "out.bin")]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skiff", required=True)
    ap.add_argument("--shared", required=True, help="unused")
    args = ap.parse_args()
    skiff = os.path.abspath(args.skiff)
    passed = failed = 0

    def record(ok, name, detail):
        nonlocal passed, failed
        passed, failed = passed + ok, failed + (not ok)
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)

    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="skiff_hf_err_") as tmp:
        jobs = []  # (kind, label, fragments, args)
        for shards in (1, 2):
            good = os.path.join(tmp, f"good{shards}")
            write_valid(good, shards)
            for cmd, a in commands(good).items():
                jobs.append(("ok", f"valid folder, {shards} shard(s): {cmd}", [], a))
        for i, (label, fragments, shards, mutate) in enumerate(cases()):
            path = os.path.join(tmp, f"bad{i:03d}")
            write_valid(path, shards)
            mutate(path)
            for cmd, a in commands(path).items():
                jobs.append(("bad", f"{label}: {cmd}", fragments, a))
        tok = os.path.join(tmp, "good1")
        jobs.append(("usage", "--tokenizer with a folder", ["--tokenizer"],
                     ["info", "-m", tok, "--tokenizer", os.path.join(tok, "config.json")]))
        jobs.append(("usage", "flash-pack of a folder", ["GGUF"], ["flash-pack", tok, "-o", os.path.join(tmp, "pack")]))

        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(lambda j: run(skiff, j[3]), jobs))
        for (kind, label, fragments, _), r in zip(jobs, results):
            if kind == "ok":
                record(r["rc"] == 0, label, describe(r))
                continue
            lines = r["stderr"].splitlines()
            ok = r["rc"] == 1 and len(lines) == 1 and lines[0].startswith("error: ")
            missing = [f for f in fragments if ok and f not in lines[0]]
            record(ok and not missing, label, describe(r) + (f" lacks {missing}" if missing else ""))
    print(f"{passed} passed, {failed} failed ({time.time() - t0:.1f}s)")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

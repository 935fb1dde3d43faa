#!/usr/bin/python3
"""skiff's logits against an independent float64 PyTorch reference (llama_reference.py).

Run: /usr/bin/python3 tests/reference/test_model_reference.py --skiff build/skiff --shared ../shared
(ctest runs it this way). Prints one line per check and ends with "N passed, M failed";
exit code 0 only when nothing failed.

What it checks
- Self-checks that need no skiff: the GGUF writer round-trips through an independent reader;
  the vectorized block decoders agree with a literal per-element transliteration of ggml's
  dequantize_row_*; the quantizers' errors are within their step sizes; the reference
  reproduces llama.cpp's greedy story from the real stories260K model (peer GGUF written by
  llama.cpp's converter), which pins the RoPE convention, GQA mapping and norms.
- F32 random tiny models (GQA 2:1, GQA 4:1 with a tied head and partial rotary, MHA with
  non-default eps and rope base, MQA 4:1 with odd partial rotary; odd FFN sizes; vocab >= 300):
  27 tokens through `skiff dump-logits` with --prefill 7 (7 as one batch, then 20 single
  steps through the KV cache) vs the reference; --prefill 27 vs the reference; --prefill 1 vs
  --prefill 27; --exit-layer k (k = 1..L-1) vs the reference's early exit.
- One model in F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and a per-tensor mix of them; one
  dim-256 model in Q4_K, Q5_K, Q6_K and a Q4_K_M-like mix. The reference computes with the
  dequantized weights the file holds, and quantizes the inputs of the products whose inputs
  skiff quantizes (as `skiff info` reports them), so every type is held to the F32 tolerance
  (up to rounding flips of single inputs, see TOL).
- skiff on the llama.cpp-written stories260K GGUF vs the reference (real weights).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_writer as gw  # noqa: E402
import llama_reference as ref  # noqa: E402
from llama_reference import LlamaConfig  # noqa: E402

# Max-abs logit tolerance. The reference computes in float64 with exactly the dequantized
# weights, so the only expected difference is skiff's float32 arithmetic (logits here are
# O(1..10)): 1e-4 for every weight type.
TOL = 1e-4
# Q8_0, Q4_0 (blocks of 32) and Q4_K, Q5_K, Q6_K (blocks of 256) matrices take their input quantized
# on the fly to 8 bits and use integer dot products, as llama.cpp does (src/kernels/matmul.h;
# `skiff info` names them per CPU path). The reference quantizes the same inputs the same way
# (llama_reference.quantize_input), so the integer arithmetic must agree to float32 rounding.
# BF16 matrices on CPUs with AVX512-BF16 take their input rounded to bf16 (vdpbf16ps, as
# llama.cpp does); the reference rounds the same inputs (llama_reference.engine_input).
# An input that sits within float32 noise of a rounding boundary can still round the other way
# in one of the two (the reference's activations are float64); such a flip moves that
# position's logits by up to ~0.07 on these small random models. So with quantized inputs,
# at most a third of the positions may exceed TOL, and those by at most FLIP_TOL.
FLIP_TOL = 0.1

N_PROMPT, N_MORE = 7, 20          # 7 tokens as one batch, then 20 single steps
SKIFF_TIMEOUT_S = 60


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def record(self, ok: bool, name: str, detail: str = ""):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)

    def run(self, name: str, fn):
        """Runs fn() -> (ok, detail); an exception is a failure with its message."""
        try:
            ok, detail = fn()
        except Exception as e:  # noqa: BLE001 - any error is a failed check, with its reason
            ok, detail = False, f"{type(e).__name__}: {e}"
            if os.environ.get("SKIFF_TEST_VERBOSE"):
                traceback.print_exc()
        self.record(ok, name, detail)
        return ok


# ----------------------------------------------------------------------------------------------
# Running skiff
# ----------------------------------------------------------------------------------------------
class SkiffError(Exception):
    pass


def dump_logits(skiff: str, model: str, tokens, vocab: int, workdir: str, prefill=None,
                exit_layer=None, threads=None) -> np.ndarray:
    out = os.path.join(workdir, f"logits_{os.getpid()}_{time.monotonic_ns()}.bin")
    cmd = [skiff, "dump-logits", "-m", model, "--tokens", " ".join(str(int(t)) for t in tokens)]
    if prefill is not None:
        cmd += ["--prefill", str(prefill)]
    if exit_layer is not None:
        cmd += ["--exit-layer", str(exit_layer)]
    if threads is not None:
        cmd += ["-t", str(threads)]
    cmd += ["-o", out]
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=SKIFF_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SkiffError(f"timed out after {SKIFF_TIMEOUT_S}s: {' '.join(cmd[1:3])} ...")
    if p.returncode != 0:
        err = p.stderr.decode(errors="replace").strip().splitlines()
        raise SkiffError(f"exit code {p.returncode}; stderr: {' | '.join(err[-3:]) or '(empty)'}")
    if not os.path.exists(out):
        raise SkiffError(f"exit 0 but no output file {out}")
    data = np.fromfile(out, dtype="<f4")
    os.remove(out)
    if data.size != len(tokens) * vocab:
        raise SkiffError(f"output has {data.size} floats, expected {len(tokens)}x{vocab}")
    return data.reshape(len(tokens), vocab).astype(np.float64)


def compare(got: np.ndarray, want: np.ndarray, flips: bool = False):
    """(ok, detail): max-abs difference and where it is; non-finite values count as infinite.
    flips: up to a third of the positions may differ by up to FLIP_TOL (see TOL)."""
    diff = np.abs(got - want)
    diff[~np.isfinite(diff)] = np.inf
    t, v = np.unravel_index(int(np.argmax(diff)), diff.shape)
    worst = float(diff[t, v])
    detail = f"max_abs={worst:.3g} (tol {TOL:.0e}; max |logit| {np.abs(want).max():.3g})"
    if worst <= TOL:
        return True, detail
    bad_rows = np.nonzero(diff.max(axis=1) > TOL)[0]
    detail += (f" at token {t} vocab {v} (want {want[t, v]:.6g}, got {got[t, v]:.6g});"
               f" {len(bad_rows)}/{diff.shape[0]} positions over tol, first at {bad_rows[0]};"
               f" per-position max: {np.array2string(diff.max(axis=1), precision=1, max_line_width=10**6)}")
    if flips and worst <= FLIP_TOL and 3 * len(bad_rows) <= diff.shape[0]:
        return True, detail + f" (input rounding flips: within {FLIP_TOL:g} on at most a third of the positions)"
    return False, detail


# ----------------------------------------------------------------------------------------------
# Self-checks (no skiff)
# ----------------------------------------------------------------------------------------------
def check_writer_roundtrip(tmp: str):
    rng = np.random.default_rng(1)
    w = gw.GGUFWriter()
    w.add_u32("t.u32", 4000000000)
    w.add_i32("t.i32", -123456)
    w.add_u64("t.u64", 2**40 + 3)
    w.add_f32("t.f32", 0.25)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "h\u00e9llo \u2581x")
    w.add_array_str("t.astr", ["a", "", "\u2581b"])
    w.add_array_f32("t.af32", [1.5, -2.0])
    w.add_array_i32("t.ai32", [1, -2, 3])
    expect = {}
    for t in (gw.F32, gw.F16, gw.BF16, gw.Q8_0, gw.Q4_0, gw.Q4_1, gw.Q5_0, gw.Q5_1):
        x = rng.standard_normal((3, 64)).astype(np.float32)
        data, deq = gw.encode(x, t)
        w.add_tensor(f"x.{gw.TYPE_INFO[t][0]}", [64, 3], t, data)
        expect[f"x.{gw.TYPE_INFO[t][0]}"] = (t, data, deq)
    for t in (gw.Q4_K, gw.Q5_K, gw.Q6_K):
        data, deq = gw.random_k_quant((2, 256), t, rng, 0.1)
        w.add_tensor(f"x.{gw.TYPE_INFO[t][0]}", [256, 2], t, data)
        expect[f"x.{gw.TYPE_INFO[t][0]}"] = (t, data, deq)
    path = os.path.join(tmp, "roundtrip.gguf")
    lay = w.write(path)
    g = gw.read_gguf(path)
    problems = []
    want_md = {"t.u32": 4000000000, "t.i32": -123456, "t.u64": 2**40 + 3, "t.f32": 0.25,
               "t.bool": True, "t.str": "h\u00e9llo \u2581x", "t.astr": ["a", "", "\u2581b"],
               "t.af32": [1.5, -2.0], "t.ai32": [1, -2, 3]}
    if g.version != 3 or g.metadata != want_md:
        problems.append(f"metadata {g.metadata}")
    if g.data_start % 32 or g.data_start != lay.data_start:
        problems.append(f"data_start {g.data_start}")
    if list(g.tensors) != list(expect):
        problems.append("tensor order")
    for name, (t, data, deq) in expect.items():
        info = g.tensors[name]
        if info.offset % 32 or info.ggml_type != t or info.data != data:
            problems.append(f"tensor {name}")
        if not np.array_equal(g.tensor_values(name), deq):
            problems.append(f"values {name}")
        if lay.tensors[name]["data"] != g.data_start + info.offset:
            problems.append(f"layout {name}")
    size = os.path.getsize(path)
    if size != lay.file_size or size % 32:
        problems.append(f"file size {size}")
    return not problems, "; ".join(problems) or f"{len(expect)} tensors, {len(want_md)} keys, {size} bytes"


def _f16(b: bytes, off: int) -> float:
    return float(np.frombuffer(b[off:off + 2], "<f2")[0])


def _slow_dequantize_block(t: int, b: bytes) -> list:
    """A literal per-element transliteration of ggml's dequantize_row_* for one block."""
    f32 = np.float32
    y = [0.0] * gw.block_size(t)
    if t == gw.Q8_0:
        d = f32(_f16(b, 0))
        for j in range(32):
            y[j] = d * f32(b[2 + j] - 256 if b[2 + j] > 127 else b[2 + j])
    elif t in (gw.Q4_0, gw.Q4_1):
        d = f32(_f16(b, 0))
        m = f32(_f16(b, 2)) if t == gw.Q4_1 else None
        qs = b[4:] if t == gw.Q4_1 else b[2:]
        for j in range(16):
            x0, x1 = qs[j] & 0x0F, qs[j] >> 4
            if t == gw.Q4_0:
                y[j], y[j + 16] = f32(x0 - 8) * d, f32(x1 - 8) * d
            else:
                y[j], y[j + 16] = f32(x0) * d + m, f32(x1) * d + m
    elif t in (gw.Q5_0, gw.Q5_1):
        d = f32(_f16(b, 0))
        base = 4 if t == gw.Q5_1 else 2
        m = f32(_f16(b, 2)) if t == gw.Q5_1 else None
        qh = int.from_bytes(b[base:base + 4], "little")
        qs = b[base + 4:]
        for j in range(16):
            xh0 = ((qh >> j) << 4) & 0x10
            xh1 = (qh >> (j + 12)) & 0x10
            x0, x1 = (qs[j] & 0x0F) | xh0, (qs[j] >> 4) | xh1
            if t == gw.Q5_0:
                y[j], y[j + 16] = f32(x0 - 16) * d, f32(x1 - 16) * d
            else:
                y[j], y[j + 16] = f32(x0) * d + m, f32(x1) * d + m
    elif t in (gw.Q4_K, gw.Q5_K):
        d, dmin = f32(_f16(b, 0)), f32(_f16(b, 2))
        sc = b[4:16]
        qh = b[16:48] if t == gw.Q5_K else None
        ql = b[48:] if t == gw.Q5_K else b[16:]

        def scale_min(j):
            if j < 4:
                return sc[j] & 63, sc[j + 4] & 63
            return (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4), (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4)
        n, u1, u2, q = 0, 1, 2, 0
        for j in range(0, 256, 64):
            s, mm = scale_min(j // 32)
            d1, m1 = d * f32(s), dmin * f32(mm)
            s, mm = scale_min(j // 32 + 1)
            d2, m2 = d * f32(s), dmin * f32(mm)
            for l in range(32):
                h = (16 if qh[l] & u1 else 0) if qh else 0
                y[n] = d1 * f32((ql[q + l] & 0xF) + h) - m1
                n += 1
            for l in range(32):
                h = (16 if qh[l] & u2 else 0) if qh else 0
                y[n] = d2 * f32((ql[q + l] >> 4) + h) - m2
                n += 1
            q += 32
            u1 <<= 2
            u2 <<= 2
    elif t == gw.Q6_K:
        ql, qh = b[0:128], b[128:192]
        sc = np.frombuffer(b[192:208], np.int8)
        d = f32(_f16(b, 208))
        for half in range(2):
            o, lo, ho, so = 128 * half, 64 * half, 32 * half, 8 * half
            for l in range(32):
                i = l // 16
                q1 = ((ql[lo + l] & 0xF) | (((qh[ho + l] >> 0) & 3) << 4)) - 32
                q2 = ((ql[lo + l + 32] & 0xF) | (((qh[ho + l] >> 2) & 3) << 4)) - 32
                q3 = ((ql[lo + l] >> 4) | (((qh[ho + l] >> 4) & 3) << 4)) - 32
                q4 = ((ql[lo + l + 32] >> 4) | (((qh[ho + l] >> 6) & 3) << 4)) - 32
                y[o + l] = d * f32(sc[so + i]) * f32(q1)
                y[o + l + 32] = d * f32(sc[so + i + 2]) * f32(q2)
                y[o + l + 64] = d * f32(sc[so + i + 4]) * f32(q3)
                y[o + l + 96] = d * f32(sc[so + i + 6]) * f32(q4)
    return y


def check_decoders():
    rng = np.random.default_rng(2)
    problems = []
    for t in (gw.Q8_0, gw.Q4_0, gw.Q4_1, gw.Q5_0, gw.Q5_1, gw.Q4_K, gw.Q5_K, gw.Q6_K):
        name, qk, nbytes = gw.TYPE_INFO[t]
        if qk == 256:
            data, deq = gw.random_k_quant((1, 512), t, rng, 0.1)
        else:
            x = rng.standard_normal((1, 96)).astype(np.float32) + np.float32(0.3)
            data, deq = gw.encode(x, t)
        slow = []
        for i in range(len(data) // nbytes):
            slow += _slow_dequantize_block(t, data[i * nbytes:(i + 1) * nbytes])
        if not np.array_equal(np.array(slow, np.float32), deq.reshape(-1)):
            problems.append(name)
    return not problems, ("mismatch: " + ", ".join(problems)) if problems else "8 block types"


def check_quantizers():
    """Quantization error within the step size: catches a wrong rounding or nibble order."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 256)).astype(np.float32)
    problems, notes = [], []
    steps = {gw.F16: 2.0 ** -10, gw.BF16: 2.0 ** -7, gw.Q8_0: 1 / 127, gw.Q4_0: 1 / 8,
             gw.Q4_1: 2 / 15, gw.Q5_0: 1 / 16, gw.Q5_1: 2 / 31}
    for t, step in steps.items():
        _, deq = gw.encode(x, t)
        blocks = x.reshape(-1, 32)
        amax = np.abs(blocks).max(axis=1, keepdims=True)
        # error <= one step of the block's scale (0.5 step rounding + clipping/f16 scale)
        err = np.abs(deq.reshape(-1, 32) - blocks) / (amax * step)
        notes.append(f"{gw.TYPE_INFO[t][0]}:{err.max():.2f}")
        if err.max() > 1.01:
            problems.append(gw.TYPE_INFO[t][0])
    return not problems, ("too coarse: " + ",".join(problems) + "; ") * bool(problems) + \
        "max error in steps " + " ".join(notes)


def check_bf16_rounding():
    # 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even mantissa (1.0) wins; 1 + 3*2^-8 rounds up.
    x = np.array([1 + 2 ** -8, 1 + 3 * 2 ** -8, -2.5, 65504.0], np.float32)
    got = gw.bf16_bits_to_f32(gw.f32_to_bf16_bits(x))
    want = np.array([1.0, 1 + 2 ** -6, -2.5, 65536.0], np.float32)
    return bool(np.array_equal(got, want)), f"{got.tolist()}"


STORIES_BOS_GREEDY = ("Once upon a time, there was a little girl named Lily. "
                      "She loved to play outside in the park.")


def peer_model_path(shared: str) -> str:
    return os.path.join(shared, "models", "peer", "stories260K.gguf")


def check_reference_on_stories260k(shared: str):
    """The reference's greedy decoding of the real stories260K (llama.cpp's GGUF) from BOS
    reproduces the story llama.cpp prints (../shared/models/MANIFEST.md)."""
    g = gw.read_gguf(peer_model_path(shared))
    cfg, weights = ref.config_from_gguf(g), ref.weights_from_gguf(g)
    pieces = g.metadata["tokenizer.ggml.tokens"]
    tokens = [1]
    while len(tokens) < 40:
        tokens.append(int(np.argmax(ref.forward(cfg, weights, tokens)[-1])))
    text = "".join(pieces[t] for t in tokens[1:]).replace("\u2581", " ").strip()
    return text.startswith(STORIES_BOS_GREEDY), repr(text[:len(STORIES_BOS_GREEDY) + 10])


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------
F32_CASES = [
    # name, config, seed
    ("f32_gqa2_untied",
     LlamaConfig(dim=64, n_layers=3, n_heads=4, n_kv_heads=2, ffn=37, vocab=300), 11),
    ("f32_gqa4_tied_partial_rope",
     LlamaConfig(dim=96, n_layers=3, n_heads=8, n_kv_heads=2, ffn=67, vocab=320, tied=True,
                 n_rot=8), 12),
    ("f32_mha_eps_base",
     LlamaConfig(dim=48, n_layers=2, n_heads=3, n_kv_heads=3, ffn=53, vocab=301, rms_eps=1e-2,
                 rope_base=500.0, context_length=40), 13),
    ("f32_mqa_partial_rope",
     LlamaConfig(dim=32, n_layers=4, n_heads=4, n_kv_heads=1, ffn=45, vocab=300, n_rot=6,
                 rope_base=100000.0), 14),
    # head_dim != dim / heads (attention.key_length): q is wider than the embedding
    ("f32_key_length_24x4_dim48",
     LlamaConfig(dim=48, n_layers=2, n_heads=4, n_kv_heads=2, ffn=40, vocab=300, key_length=24), 15),
    # RoPE scaling: a small base and original context, so that within 27 positions every
    # scheme moves some pairs by much more than the tolerance (the sensitivity self-check)
    ("f32_rope_freqs_divisors",
     LlamaConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn=48, vocab=300, rope_base=100.0,
                 rope_freqs=[1.0, 1.0, 1.5, 2.5, 4.0, 8.0, 8.0, 8.0]), 16),
    ("f32_rope_linear_x4",
     LlamaConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn=48, vocab=300, rope_base=100.0,
                 rope_scaling="linear", rope_factor=4.0), 17),
    ("f32_rope_yarn_x4_ctx16",
     LlamaConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=4, ffn=48, vocab=300, rope_base=100.0,
                 rope_scaling="yarn", rope_factor=4.0, rope_orig_ctx=16, context_length=64), 18),
]

QUANT32_CFG = LlamaConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn=96, vocab=300)
QUANT32_TYPES = [gw.F16, gw.BF16, gw.Q8_0, gw.Q4_0, gw.Q4_1, gw.Q5_0, gw.Q5_1]
# ffn 80: ffn_down rows (80) are not a multiple of 32 and stay F32 next to quantized gate/up.
MIXED32_CFG = LlamaConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=1, ffn=80, vocab=310,
                          tied=True)
QUANTK_CFG = LlamaConfig(dim=256, n_layers=2, n_heads=4, n_kv_heads=2, ffn=512, vocab=300)
QUANTK_TYPES = [gw.Q4_K, gw.Q5_K, gw.Q6_K]


def mixed32_type(name, shape):
    order = QUANT32_TYPES + [gw.F32]
    return order[sum(map(ord, name)) % len(order)]


def mixed_k_type(name, shape):
    # like llama.cpp's Q4_K_M: Q6_K for the head, attn_v and ffn_down; Q8_0 embeddings.
    if name == "token_embd.weight":
        return gw.Q8_0
    if name == "output.weight" or name.endswith(("attn_v.weight", "ffn_down.weight")):
        return gw.Q6_K
    return gw.Q4_K


class Model:
    """A GGUF on disk plus the reference config/weights read back from that same file."""

    def __init__(self, path: str):
        g = gw.read_gguf(path)
        self.path = path
        self.cfg = ref.config_from_gguf(g)
        self.weights = ref.weights_from_gguf(g)
        self.types = sorted({gw.TYPE_INFO[t.ggml_type][0] for t in g.tensors.values()})
        self.tensor_types = {name: gw.TYPE_INFO[t.ggml_type][0].lower() for name, t in g.tensors.items()}
        self.input_blocks = {}  # matrix name -> block of the engine's 8-bit input quantization, or "bf16"

    def use_engine_input_quantization(self, skiff: str):
        """Reads which weight types' products quantize their input on this CPU (and in blocks
        of how many) from `skiff info`, so the reference quantizes the same inputs; returns
        (ok, detail) for the check that the line names exactly the model's matrix types."""
        p = subprocess.run([skiff, "info", "-m", self.path], capture_output=True, text=True,
                           timeout=SKIFF_TIMEOUT_S, check=True)
        line = next(l for l in p.stdout.splitlines() if "matmul inputs:" in l)
        by_type, named = {}, set()
        for item in line.split("matmul inputs:")[1].split(","):
            name, how = item.split()
            named.add(name.lower())
            if how.startswith("8-bit/"):
                by_type[name.lower()] = int(how[len("8-bit/"):])
            elif how == "bf16":  # BF16 weights on AVX512-BF16: the input rounded to bf16
                by_type[name.lower()] = "bf16"
        self.input_blocks = {n: by_type[t] for n, t in self.tensor_types.items() if t in by_type}
        # The line names exactly the types of the matrices (no norm, no untied embedding).
        matrices = {t for n, t in self.tensor_types.items()
                    if "norm" not in n and (n != "token_embd.weight" or self.cfg.tied)}
        return named == matrices, f"'{line.strip()}'; matrix types {sorted(matrices)}"

    def reference(self, tokens, n_layers=None) -> np.ndarray:
        return ref.forward(self.cfg, self.weights, tokens, n_layers, self.input_blocks)


def make_model(tmp: str, name: str, cfg: LlamaConfig, seed: int, type_for=None) -> Model:
    writer, deq = ref.build_writer(cfg, ref.random_weights(cfg, seed), type_for, seed)
    path = os.path.join(tmp, name + ".gguf")
    writer.write(path)
    model = Model(path)
    # self-check: the file holds exactly what the writer meant to write
    assert set(model.weights) == set(deq)
    for tensor, values in deq.items():
        assert np.array_equal(model.weights[tensor], values), tensor
    for key in ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn", "vocab", "rope_dims",
                "context_length", "tied"):
        assert getattr(model.cfg, key) == getattr(cfg, key), key
    assert model.cfg.rms_eps == float(np.float32(cfg.rms_eps))
    return model


def prompt_tokens(vocab: int, seed: int):
    rng = np.random.default_rng(seed)
    return rng.integers(0, vocab, N_PROMPT + N_MORE).tolist()


# ----------------------------------------------------------------------------------------------
# skiff checks
# ----------------------------------------------------------------------------------------------
def check_model(res: Results, skiff: str, tmp: str, label: str, model: Model, tokens,
                exits=(), threads=False):
    vocab = model.cfg.vocab
    res.run(f"{label} info names the matrix types and their inputs",
            lambda: model.use_engine_input_quantization(skiff))
    want = model.reference(tokens)
    cache = {}

    def run(prefill):
        if prefill not in cache:
            cache[prefill] = dump_logits(skiff, model.path, tokens, vocab, tmp, prefill=prefill)
        return cache[prefill]

    n = len(tokens)
    flips = bool(model.input_blocks)
    res.run(f"{label} prefill {N_PROMPT}+{n - N_PROMPT} steps vs reference",
            lambda: compare(run(N_PROMPT), want, flips))
    res.run(f"{label} prefill {n} vs reference", lambda: compare(run(n), want, flips))
    res.run(f"{label} prefill 1 (+{n - 1} steps) vs prefill {n}",
            lambda: compare(run(1), run(n)))
    if threads:  # the result must not depend on how the work is split between threads
        res.run(f"{label} -t 1 vs -t 3 (prefill {N_PROMPT})",
                lambda: compare(dump_logits(skiff, model.path, tokens, vocab, tmp, N_PROMPT, threads=1),
                                dump_logits(skiff, model.path, tokens, vocab, tmp, N_PROMPT, threads=3)))
    for k in exits:
        res.run(f"{label} exit-layer {k} (prefill {N_PROMPT}) vs reference early exit",
                lambda k=k: compare(dump_logits(skiff, model.path, tokens, vocab, tmp,
                                                prefill=N_PROMPT, exit_layer=k),
                                    model.reference(tokens, n_layers=k), flips))


def check_sensitivity(model: Model, tokens):
    """Each non-default eps / rope base of a case must move the logits far beyond the
    tolerance, or the case could not catch an engine that ignores it."""
    base = model.reference(tokens)
    notes, ok = [], True
    for field, default in (("rms_eps", 1e-5), ("rope_base", 10000.0), ("rope_scaling", "none"),
                           ("rope_freqs", None)):
        saved = getattr(model.cfg, field)
        if isinstance(default, float) and abs(saved - default) <= 1e-6 * default:
            continue
        if not isinstance(default, float) and saved == default:
            continue
        setattr(model.cfg, field, default)
        d = float(np.abs(model.reference(tokens) - base).max())
        setattr(model.cfg, field, saved)
        notes.append(f"{field} {saved} -> default {default} changes logits by {d:.3g}")
        ok &= d > 100 * TOL
    return ok, "; ".join(notes)


def run_skiff_checks(res: Results, skiff: str, shared: str, tmp: str):
    def case(label, build, tokens_seed, **kw):
        """Builds a model (a failure to build is a failed check) and runs check_model on it."""
        try:
            model = build()
        except Exception as e:  # noqa: BLE001
            res.record(False, f"{label}: building the model", f"{type(e).__name__}: {e}")
            return
        tokens = prompt_tokens(model.cfg.vocab, tokens_seed)
        if (model.cfg.rms_eps != np.float32(1e-5) or model.cfg.rope_base != 10000.0
                or model.cfg.rope_scaling != "none" or model.cfg.rope_freqs is not None):
            res.run(f"{label} self-check: non-default hyper-parameters matter",
                    lambda: check_sensitivity(model, tokens))
        check_model(res, skiff, tmp, label, model, tokens, **kw)

    for i, (name, cfg, seed) in enumerate(F32_CASES):
        case(name, lambda: make_model(tmp, name, cfg, seed), 100 + i,
             exits=range(1, cfg.n_layers), threads=(i == 0))

    for t in QUANT32_TYPES:
        tname = gw.TYPE_INFO[t][0]
        case(f"{tname} (dim 64, ffn 96)",
             lambda: make_model(tmp, f"quant_{tname}", QUANT32_CFG, 21, lambda n, s: t),
             200)
    case("mixed F32/F16/BF16/Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 (ffn 80, tied)",
         lambda: make_model(tmp, "mixed32", MIXED32_CFG, 22, mixed32_type), 201)

    for t in QUANTK_TYPES:
        tname = gw.TYPE_INFO[t][0]
        case(f"{tname} (dim 256, ffn 512)",
             lambda: make_model(tmp, f"quant_{tname}", QUANTK_CFG, 31, lambda n, s: t),
             300)
    case("mixed Q4_K/Q6_K/Q8_0 like Q4_K_M (dim 256)",
         lambda: make_model(tmp, "mixed_k", QUANTK_CFG, 32, mixed_k_type), 300,
         threads=True)

    # real weights in a file written by llama.cpp; the tokens are BOS + the reference's greedy
    # continuation, so positions see real text
    peer = Model(peer_model_path(shared))
    tokens = [1]
    while len(tokens) < N_PROMPT + N_MORE:
        tokens.append(int(np.argmax(peer.reference(tokens)[-1])))
    check_model(res, skiff, tmp, "stories260K (llama.cpp GGUF)", peer, tokens,
                exits=range(1, peer.cfg.n_layers))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skiff", required=True, help="path to the skiff binary")
    ap.add_argument("--shared", required=True, help="path to the shared folder (models, data)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary GGUF files")
    args = ap.parse_args()
    torch.set_num_threads(1)
    skiff = os.path.abspath(args.skiff)
    res = Results()
    t0 = time.time()
    tmp_obj = None if args.keep else tempfile.TemporaryDirectory(prefix="skiff_ref_")
    tmp = tempfile.mkdtemp(prefix="skiff_ref_") if args.keep else tmp_obj.name
    if args.keep:
        print(f"keeping files in {tmp}")

    res.run("self-check: GGUF writer round-trips through the reader", lambda: check_writer_roundtrip(tmp))
    res.run("self-check: block decoders == literal ggml dequantize_row_*", check_decoders)
    res.run("self-check: quantizer error within one step", check_quantizers)
    res.run("self-check: bf16 round-to-nearest-even", check_bf16_rounding)
    res.run("self-check: reference greedy on stories260K == llama.cpp's story",
            lambda: check_reference_on_stories260k(args.shared))

    if not os.access(skiff, os.X_OK):
        res.record(False, "skiff binary", f"not found or not executable: {skiff}")
    else:
        run_skiff_checks(res, skiff, args.shared, tmp)

    print(f"({time.time() - t0:.1f}s)")
    print(f"{res.passed} passed, {res.failed} failed")
    return 0 if res.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

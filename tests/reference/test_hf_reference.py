#!/usr/bin/python3
"""skiff on Hugging Face checkpoint folders against an independent PyTorch forward in HF layout.

Run: /usr/bin/python3 tests/reference/test_hf_reference.py --skiff build/skiff --shared ../shared
(ctest runs it this way). Prints one line per check and ends with "N passed, M failed"; exit
code 0 only when nothing failed.

The reference below is written from Hugging Face transformers' Llama definitions, not from
skiff (nor from llama_reference.py, which uses the GGUF interleaved layout): q/k keep HF's
rotate-half layout, rotate_half(x) = cat(-x[d/2:], x[:d/2]), cos/sin over the full head dim
(cat(freqs, freqs)), multiplied by the rope type's attention factor; inverse frequencies by
HF's default, linear, llama3 and yarn formulas (_compute_*_parameters in
modeling_rope_utils.py). Computed in float64 from exactly the values the files hold (BF16 and
F16 weights rounded as written).

Checks
- The folder loads as written (`skiff info -m DIR`: every tensor's name, type, shape, bytes;
  shard count), independent of the forward pass.
- 27 tokens through `skiff dump-logits -m DIR --prefill 7` vs the reference, within 1e-4:
  F32 untied MHA; F32 tied GQA 2:1 in 3 shards with an index; BF16 GQA 4:1 with llama3 scaling
  in 2 shards found without an index; F16 with F32 norms; F32 head_dim != hidden/heads with
  linear scaling; F32 yarn scaling.
- `skiff convert --hf DIR -o X.gguf` then dump-logits on X.gguf equals dump-logits on DIR
  (within 1e-5 for F32 folders; the same weights, so nothing but rounding may differ).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_writer as hw  # noqa: E402
from hf_writer import HfConfig  # noqa: E402

TOL = 1e-4
CONVERT_TOL = 1e-5
N_TOKENS, PREFILL = 27, 7
TIMEOUT_S = 60
DT = torch.float64


# ----------------------------------------------------------------------------------------------
# The reference (Hugging Face layout)
# ----------------------------------------------------------------------------------------------
def default_inv_freq(dim: int, base: float) -> torch.Tensor:
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=DT) / dim))


def rope_parameters(cfg: HfConfig):
    """(inv_freq [hd/2], attention_factor) as HF computes them for cfg.rope_scaling."""
    dim, base = cfg.hd, cfg.rope_theta
    rs = cfg.rope_scaling
    kind = None if rs is None else rs.get("rope_type", rs.get("type"))
    if kind is None or kind == "default":
        return default_inv_freq(dim, base), 1.0
    if kind == "linear":
        return default_inv_freq(dim, base) / rs["factor"], 1.0
    if kind == "llama3":
        inv_freq = default_inv_freq(dim, base)
        factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old_ctx = rs["original_max_position_embeddings"]
        low_freq_wavelen, high_freq_wavelen = old_ctx / low, old_ctx / high
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_ctx / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
        return torch.where(medium, smoothed, scaled), 1.0
    if kind == "yarn":
        factor = rs["factor"]
        original = rs.get("original_max_position_embeddings") or cfg.max_pos
        attention_factor = rs.get("attention_factor")
        if attention_factor is None:
            attention_factor = 1.0 if factor <= 1 else 0.1 * math.log(factor) + 1.0
        beta_fast, beta_slow = rs.get("beta_fast") or 32, rs.get("beta_slow") or 1

        def correction_dim(rotations):
            return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

        low = max(math.floor(correction_dim(beta_fast)), 0)
        high = min(math.ceil(correction_dim(beta_slow)), dim - 1)
        if low == high:
            high += 0.001
        ramp = ((torch.arange(dim // 2, dtype=DT) - low) / (high - low)).clamp(0, 1)
        extrapolation_factor = 1 - ramp
        pos_freqs = base ** (torch.arange(0, dim, 2, dtype=DT) / dim)
        inv_extra, inv_inter = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
        inv_freq = inv_inter * (1 - extrapolation_factor) + inv_extra * extrapolation_factor
        return inv_freq, attention_factor
    raise ValueError(kind)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rmsnorm(x, w, eps):
    return w * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))


def reference_logits(cfg: HfConfig, weights: dict, tokens, bf16_inputs: bool = False) -> np.ndarray:
    """bf16_inputs: the products' inputs rounded to bfloat16 from float32 first, as skiff
    does for BF16 weights on CPUs with AVX512-BF16 (`skiff info`: "matmul inputs: bf16 bf16")."""
    W = {k: torch.as_tensor(np.asarray(v), dtype=DT) for k, v in weights.items()}

    def inp(h):
        return h.to(torch.float32).to(torch.bfloat16).to(DT) if bf16_inputs else h
    T = len(tokens)
    H, KV, hd = cfg.heads, cfg.kv_heads, cfg.hd
    inv_freq, attention_factor = rope_parameters(cfg)
    pos = torch.arange(T, dtype=DT)
    freqs = pos[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)                     # [T, hd]
    cos = (emb.cos() * attention_factor)[:, None, :]
    sin = (emb.sin() * attention_factor)[:, None, :]
    act = torch.nn.functional.silu if cfg.hidden_act == "silu" else torch.relu

    x = W["model.embed_tokens.weight"][torch.as_tensor(tokens)]
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    for l in range(cfg.layers):
        p = f"model.layers.{l}."
        h = rmsnorm(x, W[p + "input_layernorm.weight"], cfg.rms_eps)
        q = (inp(h) @ W[p + "self_attn.q_proj.weight"].T).reshape(T, H, hd)
        k = (inp(h) @ W[p + "self_attn.k_proj.weight"].T).reshape(T, KV, hd)
        v = (inp(h) @ W[p + "self_attn.v_proj.weight"].T).reshape(T, KV, hd)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        group = H // KV
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        scores = torch.einsum("thd,shd->hts", q, k) / math.sqrt(hd)
        probs = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
        attn = torch.einsum("hts,shd->thd", probs, v).reshape(T, H * hd)
        x = x + inp(attn) @ W[p + "self_attn.o_proj.weight"].T
        h = rmsnorm(x, W[p + "post_attention_layernorm.weight"], cfg.rms_eps)
        gate = inp(h) @ W[p + "mlp.gate_proj.weight"].T
        up = inp(h) @ W[p + "mlp.up_proj.weight"].T
        x = x + inp(act(gate) * up) @ W[p + "mlp.down_proj.weight"].T
    x = rmsnorm(x, W["model.norm.weight"], cfg.rms_eps)
    head = W["model.embed_tokens.weight" if cfg.tied else "lm_head.weight"]
    return (inp(x) @ head.T).numpy()


def interleave_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """q/k rows from HF's rotate-half order (pairs i, i + hd/2) to the interleaved order
    (pairs 2i, 2i + 1) within each head: row i -> 2i, row hd/2 + i -> 2i + 1."""
    hd = w.shape[0] // n_head
    return w.reshape(n_head, 2, hd // 2, -1).swapaxes(1, 2).reshape(w.shape)


def check_reference_against_interleaved():
    """The HF-layout reference on checkpoint weights equals llama_reference.py (GGUF layout,
    interleaved pairs, written independently) on the same weights with q/k rows interleaved:
    pins rotate_half, cos/sin over the full head and the layout mapping, without skiff."""
    import llama_reference as lr
    cfg = HfConfig(hidden=32, layers=2, heads=4, kv_heads=2, ffn=40, vocab=64, rope_theta=1000.0)
    w = hw.random_weights(cfg, seed=7)
    g = {"token_embd.weight": w["model.embed_tokens.weight"], "output_norm.weight": w["model.norm.weight"],
         "output.weight": w["lm_head.weight"]}
    for l in range(cfg.layers):
        p, b = f"model.layers.{l}.", f"blk.{l}."
        g[b + "attn_norm.weight"] = w[p + "input_layernorm.weight"]
        g[b + "attn_q.weight"] = interleave_rows(w[p + "self_attn.q_proj.weight"], cfg.heads)
        g[b + "attn_k.weight"] = interleave_rows(w[p + "self_attn.k_proj.weight"], cfg.kv_heads)
        g[b + "attn_v.weight"] = w[p + "self_attn.v_proj.weight"]
        g[b + "attn_output.weight"] = w[p + "self_attn.o_proj.weight"]
        g[b + "ffn_norm.weight"] = w[p + "post_attention_layernorm.weight"]
        g[b + "ffn_gate.weight"] = w[p + "mlp.gate_proj.weight"]
        g[b + "ffn_up.weight"] = w[p + "mlp.up_proj.weight"]
        g[b + "ffn_down.weight"] = w[p + "mlp.down_proj.weight"]
    lcfg = lr.LlamaConfig(dim=cfg.hidden, n_layers=cfg.layers, n_heads=cfg.heads, n_kv_heads=cfg.kv_heads,
                          ffn=cfg.ffn, vocab=cfg.vocab, rms_eps=cfg.rms_eps, rope_base=cfg.rope_theta)
    tokens = list(range(3, 30))
    diff = float(np.abs(reference_logits(cfg, w, tokens) - lr.forward(lcfg, g, tokens)).max())
    return diff < 1e-9, f"max_abs={diff:.3g}"


# ----------------------------------------------------------------------------------------------
# Running skiff
# ----------------------------------------------------------------------------------------------
class SkiffError(Exception):
    pass


def run_skiff(skiff: str, args) -> str:
    try:
        p = subprocess.run([skiff] + list(args), capture_output=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SkiffError(f"timed out after {TIMEOUT_S}s: {' '.join(args[:3])}")
    if p.returncode != 0:
        err = p.stderr.decode(errors="replace").strip().splitlines()
        raise SkiffError(f"{args[0]}: exit code {p.returncode}; stderr: {' | '.join(err[-3:]) or '(empty)'}")
    return p.stdout.decode(errors="replace")


def dump_logits(skiff: str, model: str, tokens, vocab: int, workdir: str, prefill=None) -> np.ndarray:
    out = os.path.join(workdir, f"logits_{time.monotonic_ns()}.bin")
    args = ["dump-logits", "-m", model, "--tokens", " ".join(map(str, tokens)), "-o", out]
    if prefill is not None:
        args += ["--prefill", str(prefill)]
    run_skiff(skiff, args)
    data = np.fromfile(out, dtype="<f4")
    os.remove(out)
    if data.size != len(tokens) * vocab:
        raise SkiffError(f"output has {data.size} floats, expected {len(tokens)}x{vocab}")
    return data.reshape(len(tokens), vocab).astype(np.float64)


def compare(got, want, tol):
    diff = np.abs(got - want)
    diff[~np.isfinite(diff)] = np.inf
    t, v = np.unravel_index(int(np.argmax(diff)), diff.shape)
    worst = float(diff[t, v])
    detail = f"max_abs={worst:.3g} (tol {tol:.0e}; max |logit| {np.abs(want).max():.3g})"
    if worst > tol:
        per_pos = np.array2string(diff.max(axis=1), precision=1, max_line_width=10**6)
        detail += f" at token {t} vocab {v}; per-position max: {per_pos}"
    return worst <= tol, detail


INFO_LINE = re.compile(r"^\s+(\S+)\s+(\S+)\s+\[(\d+), (\d+)\] (\d+) bytes$")


def check_info(skiff: str, path: str, cfg: HfConfig, held: dict, dtype: str, norm_dtype: str,
               n_shards: int):
    """`skiff info` lists every tensor with the type, shape and bytes the writer wrote."""
    out = run_skiff(skiff, ["info", "-m", path])
    if "(hf)" not in out:
        return False, "info does not say the format is hf"
    m = re.search(r"hugging face checkpoint, (\d+) safetensors file", out)
    if not m or int(m.group(1)) != n_shards:
        return False, f"shard count line missing or wrong (want {n_shards})"
    listed = {}
    for line in out.splitlines():
        mm = INFO_LINE.match(line)
        if mm:
            listed[mm.group(1)] = (mm.group(2), int(mm.group(3)), int(mm.group(4)), int(mm.group(5)))
    want_names = set(held) - ({"lm_head.weight"} if cfg.tied else set())
    if set(listed) != want_names:
        return False, f"tensors listed {sorted(set(listed) ^ want_names)[:4]} differ from those written"
    size = {"F32": 4, "F16": 2, "BF16": 2}
    for name, values in held.items():
        if name not in listed:
            continue
        t, cols, rows, nbytes = listed[name]
        shape = values.shape
        want_cols, want_rows = shape[-1], (shape[0] if len(shape) == 2 else 1)
        # Norm vectors are converted to F32 at load; matrices are used as stored.
        want_type = "f32" if len(shape) == 1 else dtype.lower()
        if (t, cols, rows) != (want_type, want_cols, want_rows):
            return False, f"{name}: listed {t} [{cols}, {rows}], written {dtype} {list(shape)}"
        if nbytes != want_cols * want_rows * (4 if len(shape) == 1 else size[dtype]):
            return False, f"{name}: {nbytes} bytes listed"
    return True, f"{len(listed)} tensors, {n_shards} shard(s)"


# ----------------------------------------------------------------------------------------------
CASES = [
    # label, config, dtype, norm dtype, shards, index
    ("f32 untied MHA", HfConfig(hidden=32, layers=2, heads=4, kv_heads=4, ffn=48, vocab=96), "F32", None, 1, True),
    ("f32 tied GQA 2:1, 3 shards + index",
     HfConfig(hidden=32, layers=3, heads=4, kv_heads=2, ffn=40, vocab=80, tied=True, rope_theta=500000.0),
     "F32", None, 3, True),
    ("bf16 GQA 4:1 llama3 scaling, 2 shards, no index",
     HfConfig(hidden=64, layers=2, heads=8, kv_heads=2, ffn=96, vocab=128, rope_theta=500000.0, max_pos=256,
              rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                            "original_max_position_embeddings": 32}),
     "BF16", None, 2, False),
    ("f16 matrices, f32 norms, GQA 2:1",
     HfConfig(hidden=32, layers=2, heads=4, kv_heads=2, ffn=48, vocab=96, rms_eps=1e-6), "F16", "F32", 1, True),
    ("f32 head_dim 12 != 32/4, linear scaling",
     HfConfig(hidden=32, layers=2, heads=4, kv_heads=2, ffn=40, vocab=72, head_dim=12,
              rope_scaling={"type": "linear", "factor": 4.0}), "F32", None, 1, True),
    ("f32 yarn scaling",
     HfConfig(hidden=32, layers=2, heads=2, kv_heads=1, ffn=40, vocab=72, max_pos=128,
              rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32,
                            "beta_fast": 32.0, "beta_slow": 1.0}), "F32", None, 1, True),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skiff", required=True)
    ap.add_argument("--shared", required=True, help="unused")
    ap.add_argument("-k", default="", help="only cases whose label contains this")
    args = ap.parse_args()
    skiff = os.path.abspath(args.skiff)
    passed = failed = 0

    def check(name, fn):
        nonlocal passed, failed
        try:
            ok, detail = fn()
        except Exception as e:  # noqa: BLE001 - a failed check, with its reason
            ok, detail = False, f"{type(e).__name__}: {e}"
            if os.environ.get("SKIFF_TEST_VERBOSE"):
                traceback.print_exc()
        passed, failed = passed + ok, failed + (not ok)
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)

    # Self-check of the writer's BF16 rounding (round to nearest even, not truncation).
    x = np.array([1.0, 1.00390625, 1.005859375, -3.0e-3, 65504.0], dtype=np.float32)
    b = hw.bf16_bits_to_f32(hw.to_bf16_bits(x))
    check("writer bf16 rounding", lambda: (bool(np.all(b == torch.tensor(x).to(torch.bfloat16).float().numpy())),
                                           f"{b.tolist()}"))

    check("reference self-check: HF layout == interleaved layout with q/k rows permuted",
          check_reference_against_interleaved)

    with tempfile.TemporaryDirectory(prefix="skiff_hf_") as tmp:
        for i, (label, cfg, dtype, norm_dtype, shards, index) in enumerate(CASES):
            if args.k and args.k not in label:
                continue
            path = os.path.join(tmp, f"case{i}")
            held = hw.write_checkpoint(path, cfg, hw.random_weights(cfg, seed=100 + i), dtype, shards, index,
                                       norm_dtype)
            check(f"{label}: loads as written", lambda: check_info(skiff, path, cfg, held, dtype,
                                                                    norm_dtype or dtype, shards))
            rng = np.random.default_rng(i)
            tokens = [int(t) for t in rng.integers(0, cfg.vocab, N_TOKENS)]
            # BF16 matrices round their input to bf16 where the CPU has AVX512-BF16 (skiff info says).
            info = run_skiff(skiff, ["info", "-m", path])
            want = reference_logits(cfg, held, tokens, bf16_inputs="matmul inputs: bf16 bf16" in info)
            got = {}

            def vs_reference():
                got["dir"] = dump_logits(skiff, path, tokens, cfg.vocab, tmp, PREFILL)
                return compare(got["dir"], want, TOL)
            check(f"{label}: dump-logits vs HF reference", vs_reference)

            def vs_converted():
                gguf = os.path.join(tmp, f"case{i}.gguf")
                run_skiff(skiff, ["convert", "--hf", path, "-o", gguf, "--type", dtype.lower()])
                a = got.get("dir")
                if a is None:
                    a = dump_logits(skiff, path, tokens, cfg.vocab, tmp, PREFILL)
                return compare(dump_logits(skiff, gguf, tokens, cfg.vocab, tmp, PREFILL), a, CONVERT_TOL)
            check(f"{label}: convert --hf to GGUF, same logits", vs_converted)

    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

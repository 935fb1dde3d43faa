"""An independent LLaMA forward pass in PyTorch, computed in float64, for checking skiff.

Written from the model's equations, not from skiff's code:
  x = token_embd[tokens]
  per layer l < n_layers:
    x += wo( attention( rope(wq h), rope(wk h), wv h ) ),  h = rmsnorm(x) * attn_norm
    x += w_down( silu(w_gate h) * w_up h ),                 h = rmsnorm(x) * ffn_norm
  logits = output( rmsnorm(x) * output_norm )     (output = token_embd when tied)
RMSNorm: x / sqrt(mean(x^2) + eps). Attention: causal, grouped-query (query head h reads kv
head h // (n_heads / n_kv_heads)), scale 1/sqrt(head_dim). RoPE: the GGUF "llama" convention
(ggml rope mode 0, NORMAL): within each head, consecutive pairs (x[2i], x[2i+1]) rotate by
pos * base^(-2i/n_rot) for 2i < n_rot; dims >= n_rot pass through unrotated.
RoPE scaling as ggml's rope computes it (ggml-cpu rope_yarn): theta_extrap = pos *
base^(-2i/n_rot) / rope_freqs[i] (Llama 3's per-pair divisors, when the file has them);
linear: theta = theta_extrap / factor; YaRN: theta = theta_interp (1 - ramp) + theta_extrap *
ramp with theta_interp = theta_extrap / factor, ramp = 1 - clamp((i - lo) / max(0.001, hi -
lo), 0, 1) between ggml_rope_yarn_corr_dims' lo and hi, and cos/sin times attn_factor *
(1 + 0.1 ln factor). head_dim comes from attention.key_length when present.

Weights are a dict keyed by GGUF tensor names holding float arrays in PyTorch layout
([out, in] for matrices = [ne1, ne0]; token_embd is [vocab, dim]). Everything is converted to
float64, so the result is the exact-arithmetic answer for the weights the file holds, up to
float64 rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from hf_writer import layer_tensors  # the per-layer tensor list, HF and GGUF names

DTYPE = torch.float64


@dataclass
class LlamaConfig:
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn: int
    vocab: int
    rms_eps: float = 1e-5
    rope_base: float = 10000.0
    n_rot: int | None = None        # llama.rope.dimension_count; None = head_dim
    context_length: int = 64
    tied: bool = False
    key_length: int | None = None    # llama.attention.key_length; None = dim // n_heads
    rope_freqs: list | None = None   # rope_freqs.weight (n_rot/2 divisors)
    rope_scaling: str = "none"       # llama.rope.scaling.type: none, linear, yarn
    rope_factor: float = 1.0
    rope_orig_ctx: int = 0           # llama.rope.scaling.original_context_length; 0 = context

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads if self.key_length is None else self.key_length

    @property
    def rope_dims(self) -> int:
        return self.head_dim if self.n_rot is None else self.n_rot

    def validate(self):
        assert self.key_length is not None or self.dim % self.n_heads == 0
        assert self.n_heads % self.n_kv_heads == 0
        assert self.rope_dims % 2 == 0 and self.rope_dims <= self.head_dim


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps) * weight


def rope_angles(cfg: "LlamaConfig", positions: torch.Tensor):
    """cos, sin [T, 1, n_rot/2] with ggml's scaling (see the module docstring)."""
    n_rot = cfg.rope_dims
    i = torch.arange(0, n_rot, 2, dtype=DTYPE)
    theta_extrap = positions.to(DTYPE)[:, None] * (cfg.rope_base ** (-i / n_rot))[None]
    if cfg.rope_freqs is not None:
        theta_extrap = theta_extrap / torch.as_tensor(cfg.rope_freqs, dtype=DTYPE)[None]
    mscale = 1.0
    theta = theta_extrap
    if cfg.rope_scaling == "linear":
        theta = theta_extrap / cfg.rope_factor
    elif cfg.rope_scaling == "yarn":
        orig = cfg.rope_orig_ctx or cfg.context_length
        def corr_dim(rotations):
            return n_rot * math.log(orig / (rotations * 2 * math.pi)) / (2 * math.log(cfg.rope_base))
        lo = max(0.0, math.floor(corr_dim(32.0)))
        hi = min(n_rot - 1.0, math.ceil(corr_dim(1.0)))
        pair = torch.arange(0, n_rot // 2, dtype=DTYPE)
        ramp = 1 - torch.clamp((pair - lo) / max(0.001, hi - lo), 0, 1)
        theta_interp = theta_extrap / cfg.rope_factor
        theta = theta_interp * (1 - ramp[None]) + theta_extrap * ramp[None]
        mscale = 1.0 + 0.1 * math.log(cfg.rope_factor)
    return (theta.cos() * mscale)[:, None, :], (theta.sin() * mscale)[:, None, :]


def rope(x: torch.Tensor, positions: torch.Tensor, n_rot: int, base: float,
         cfg: "LlamaConfig | None" = None) -> torch.Tensor:
    """x: [T, heads, head_dim]. Rotates pairs (2i, 2i+1) for 2i < n_rot."""
    if cfg is None:
        i = torch.arange(0, n_rot, 2, dtype=DTYPE)
        inv_freq = base ** (-i / n_rot)                          # [n_rot/2]
        angle = positions.to(DTYPE)[:, None] * inv_freq[None]    # [T, n_rot/2]
        cos, sin = angle.cos()[:, None, :], angle.sin()[:, None, :]
    else:
        cos, sin = rope_angles(cfg, positions)
    x0, x1 = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
    out = x.clone()
    out[..., 0:n_rot:2] = x0 * cos - x1 * sin
    out[..., 1:n_rot:2] = x0 * sin + x1 * cos
    return out


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, first_visible=None, visible=None) -> torch.Tensor:
    """q: [T, H, hd]; k, v: [T, KV, hd]. Causal, grouped-query. Returns [T, H*hd].
    first_visible (block attention): row t sees only keys first_visible[t] .. t.
    visible: instead of both, a [T, T] boolean matrix, visible[t][s]: row t sees key s."""
    T, H, hd = q.shape
    group = H // k.shape[1]
    k = k.repeat_interleave(group, dim=1)   # query head h uses kv head h // group
    v = v.repeat_interleave(group, dim=1)
    scores = torch.einsum("thd,shd->hts", q, k) / math.sqrt(hd)
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    if visible is not None:
        mask = ~torch.as_tensor(np.asarray(visible, dtype=bool))
    elif first_visible is not None:
        start = torch.as_tensor(list(first_visible), dtype=torch.long)
        mask = mask | (torch.arange(T)[None, :] < start[:, None])
    scores = scores.masked_fill(mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.einsum("hts,shd->thd", probs, v).reshape(T, H * hd)


def quantize_input(h: torch.Tensor, block: int) -> torch.Tensor:
    """An engine's on-the-fly 8-bit input quantization (skiff: quantize_input_q8 in
    src/kernels/matmul.cpp; llama.cpp: Q8_0 / Q8_K): per `block` values one scale d = amax/127
    and q = round-half-even(x / d), in float32 as the engine computes it. Returns q * d."""
    x = h.to(torch.float32).reshape(h.shape[0], -1, block)
    d = x.abs().amax(dim=-1, keepdim=True) / 127.0
    inv = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
    q = torch.round(x * inv).clamp(-127, 127)
    return (q.to(DTYPE) * d.to(DTYPE)).reshape(h.shape)


def engine_input(h: torch.Tensor, how) -> torch.Tensor:
    """The input as the engine feeds it to a product: quantized to 8 bits in blocks of `how`
    (an int, see quantize_input), or for how == "bf16" rounded to bfloat16 from float32 (round
    to nearest even, as torch and skiff's kernels/matmul_impl.h round_to_bf16 do)."""
    if how == "bf16":
        return h.to(torch.float32).to(torch.bfloat16).to(DTYPE)
    return quantize_input(h, how)


def forward(cfg: LlamaConfig, weights: dict, tokens, n_layers: int | None = None,
            input_blocks: dict | None = None, first_visible=None, positions=None, visible=None) -> np.ndarray:
    """Logits [len(tokens), vocab] (float64) after layers 0..n_layers-1 (default: all) and the
    final norm + head; positions are 0..len(tokens)-1. input_blocks: {matrix name: block or "bf16"}
    for the products whose input the engine quantizes to 8 bits or rounds to bf16 (see engine_input).
    first_visible: block attention, see attention(). positions and visible (a [T, T] boolean
    matrix) together: any attention pattern, each row at its own position (rows that are copies
    of one token at one position, computed under different masks)."""
    cfg.validate()
    W = {k: torch.as_tensor(np.asarray(v), dtype=DTYPE) for k, v in weights.items()}
    blocks = input_blocks or {}

    def mm(h, name):
        return (engine_input(h, blocks[name]) if name in blocks else h) @ W[name].T

    n_layers = cfg.n_layers if n_layers is None else n_layers
    assert 0 <= n_layers <= cfg.n_layers
    tokens = torch.as_tensor(list(tokens), dtype=torch.long)
    T = tokens.shape[0]
    H, KV, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    pos = torch.arange(T) if positions is None else torch.as_tensor(list(positions), dtype=torch.long)

    x = W["token_embd.weight"][tokens]                                  # [T, dim]
    for l in range(n_layers):
        p = f"blk.{l}."
        h = rmsnorm(x, W[p + "attn_norm.weight"], cfg.rms_eps)
        q = mm(h, p + "attn_q.weight").reshape(T, H, hd)
        k = mm(h, p + "attn_k.weight").reshape(T, KV, hd)
        v = mm(h, p + "attn_v.weight").reshape(T, KV, hd)
        q = rope(q, pos, cfg.rope_dims, cfg.rope_base, cfg)
        k = rope(k, pos, cfg.rope_dims, cfg.rope_base, cfg)
        x = x + mm(attention(q, k, v, first_visible, visible), p + "attn_output.weight")
        h = rmsnorm(x, W[p + "ffn_norm.weight"], cfg.rms_eps)
        gate = mm(h, p + "ffn_gate.weight")
        up = mm(h, p + "ffn_up.weight")
        x = x + mm(torch.nn.functional.silu(gate) * up, p + "ffn_down.weight")
    x = rmsnorm(x, W["output_norm.weight"], cfg.rms_eps)
    return mm(x, "token_embd.weight" if cfg.tied else "output.weight").numpy()


# ----------------------------------------------------------------------------------------------
# Reading a model back from a GGUF file (config + dequantized weights).
# ----------------------------------------------------------------------------------------------
def config_from_gguf(g) -> LlamaConfig:
    md = g.metadata
    assert md["general.architecture"] == "llama", md["general.architecture"]
    dim = int(md["llama.embedding_length"])
    n_heads = int(md["llama.attention.head_count"])
    vocab = int(md.get("llama.vocab_size", len(md["tokenizer.ggml.tokens"])))
    key_length = md.get("llama.attention.key_length")
    head_dim = int(key_length) if key_length is not None else dim // n_heads
    freqs = g.tensor_values("rope_freqs.weight") if "rope_freqs.weight" in g.tensors else None
    return LlamaConfig(
        key_length=None if key_length is None else int(key_length),
        rope_freqs=None if freqs is None else [float(f) for f in np.asarray(freqs).reshape(-1)],
        rope_scaling=str(md.get("llama.rope.scaling.type", "none")),
        rope_factor=float(md.get("llama.rope.scaling.factor", 1.0)),
        rope_orig_ctx=int(md.get("llama.rope.scaling.original_context_length", 0)),
        dim=dim,
        n_layers=int(md["llama.block_count"]),
        n_heads=n_heads,
        n_kv_heads=int(md.get("llama.attention.head_count_kv", n_heads)),
        ffn=int(md["llama.feed_forward_length"]),
        vocab=vocab,
        rms_eps=float(md["llama.attention.layer_norm_rms_epsilon"]),
        rope_base=float(md.get("llama.rope.freq_base", 10000.0)),
        n_rot=int(md.get("llama.rope.dimension_count", head_dim)),
        context_length=int(md["llama.context_length"]),
        tied="output.weight" not in g.tensors,
    )


def weights_from_gguf(g) -> dict:
    return {name: g.tensor_values(name) for name in g.tensors if name != "rope_freqs.weight"}


# ----------------------------------------------------------------------------------------------
# Random tiny models written as GGUF (for the tests).
# ----------------------------------------------------------------------------------------------
def tensor_shapes(cfg: LlamaConfig) -> dict:
    """GGUF tensor name -> PyTorch-layout shape ([out, in] for matrices), in file order."""
    shapes = {"token_embd.weight": (cfg.vocab, cfg.dim), "output_norm.weight": (cfg.dim,)}
    if not cfg.tied:
        shapes["output.weight"] = (cfg.vocab, cfg.dim)
    layer = layer_tensors(cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.ffn)
    for l in range(cfg.n_layers):
        for _, name, shape in layer:
            shapes[f"blk.{l}.{name}"] = shape
    return shapes


def random_weights(cfg: LlamaConfig, seed: int) -> dict:
    """float32 weights from torch.manual_seed(seed): embeddings ~ N(0, 1), matrices
    ~ N(0, 1/in), norm weights ~ 1 + N(0, 0.1^2)."""
    torch.manual_seed(seed)
    out = {}
    for name, shape in tensor_shapes(cfg).items():
        if len(shape) == 1:
            w = 1.0 + 0.1 * torch.randn(shape)
        elif name == "token_embd.weight":
            w = torch.randn(shape)
        else:
            w = torch.randn(shape) / math.sqrt(shape[1])
        out[name] = w.to(torch.float32).numpy()
    return out


def llama_vocab(n: int):
    """A valid SentencePiece-style llama vocabulary of n >= 300 tokens:
    <unk>, <s>, </s>, the 256 byte tokens, then distinct normal pieces."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    types = [2, 3, 3] + [6] * 256
    scores = [0.0] * len(tokens)
    letters = "abcdefghijklmnopqrstuvwxyz"
    pieces = ["\u2581" + c for c in letters] + list(letters)
    pieces += ["\u2581" + a + b for a in letters for b in letters]
    i = 0
    while len(tokens) < n:
        tokens.append(pieces[i])
        types.append(1)
        scores.append(-float(i + 1))
        i += 1
    return tokens, scores, types


def add_llama_metadata(w, cfg: LlamaConfig, name: str = "skiff-test"):
    """Writes the hyper-parameters and the vocabulary skiff reads into GGUFWriter w."""
    w.add_string("general.architecture", "llama")
    w.add_string("general.name", name)
    w.add_u32("llama.context_length", cfg.context_length)
    w.add_u32("llama.embedding_length", cfg.dim)
    w.add_u32("llama.block_count", cfg.n_layers)
    w.add_u32("llama.feed_forward_length", cfg.ffn)
    w.add_u32("llama.attention.head_count", cfg.n_heads)
    w.add_u32("llama.attention.head_count_kv", cfg.n_kv_heads)
    w.add_f32("llama.attention.layer_norm_rms_epsilon", cfg.rms_eps)
    w.add_f32("llama.rope.freq_base", cfg.rope_base)
    w.add_u32("llama.rope.dimension_count", cfg.rope_dims)
    w.add_u32("llama.vocab_size", cfg.vocab)
    if cfg.key_length is not None:
        w.add_u32("llama.attention.key_length", cfg.key_length)
        w.add_u32("llama.attention.value_length", cfg.key_length)
    if cfg.rope_scaling != "none":
        w.add_string("llama.rope.scaling.type", cfg.rope_scaling)
        w.add_f32("llama.rope.scaling.factor", cfg.rope_factor)
        if cfg.rope_orig_ctx:
            w.add_u32("llama.rope.scaling.original_context_length", cfg.rope_orig_ctx)
    tokens, scores, types = llama_vocab(cfg.vocab)
    w.add_string("tokenizer.ggml.model", "llama")
    w.add_array_str("tokenizer.ggml.tokens", tokens)
    w.add_array_f32("tokenizer.ggml.scores", scores)
    w.add_array_i32("tokenizer.ggml.token_type", types)
    w.add_u32("tokenizer.ggml.bos_token_id", 1)
    w.add_u32("tokenizer.ggml.eos_token_id", 2)
    w.add_u32("tokenizer.ggml.unknown_token_id", 0)


def build_writer(cfg: LlamaConfig, weights: dict, type_for=None, seed: int = 0):
    """A GGUFWriter holding cfg's metadata and every tensor of `weights`, each encoded as
    type_for(name, shape) (default F32; 1-D tensors and rows whose length is not a multiple of
    the type's block size are written as F32). K-quant tensors are generated at random
    (np.random.default_rng(seed)) rather than quantized from `weights`.
    Returns (writer, dequantized weights dict = exactly what the file holds)."""
    import gguf_writer as gw  # local import: this module is usable without the writer
    rng = np.random.default_rng(seed)
    w = gw.GGUFWriter()
    add_llama_metadata(w, cfg)
    deq = {}
    if cfg.rope_freqs is not None:
        freqs = np.asarray(cfg.rope_freqs, dtype=np.float32)
        data, _ = gw.encode(freqs, gw.F32)
        w.add_tensor("rope_freqs.weight", [len(freqs)], gw.F32, data)
    for name, shape in tensor_shapes(cfg).items():
        values = weights[name]
        t = gw.F32 if type_for is None or len(shape) == 1 else type_for(name, shape)
        if shape[-1] % gw.block_size(t) != 0:
            t = gw.F32
        if t in (gw.Q4_K, gw.Q5_K, gw.Q6_K):
            std = 1.0 if name == "token_embd.weight" else 1.0 / math.sqrt(shape[1])
            data, values = gw.random_k_quant(shape, t, rng, std)
        else:
            data, values = gw.encode(values, t)
        w.add_tensor(name, list(reversed(shape)), t, data)
        deq[name] = values
    return w, deq

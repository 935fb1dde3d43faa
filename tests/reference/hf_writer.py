"""Writes Hugging Face checkpoint folders for the tests, without the safetensors package
(Debian 12 has none): config.json, *.safetensors written here with struct + json + numpy,
model.safetensors.index.json for shards, generation_config.json.

safetensors layout: u64 little-endian header length N, N bytes of JSON
{name: {"dtype", "shape", "data_offsets": [begin, end)}, "__metadata__": {str: str}} padded with
spaces to a multiple of 8, then the tensors' bytes back to back (offsets relative to the data
section). BF16 is float32 rounded to nearest even, top 16 bits.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field

import numpy as np

DTYPES = {"F32": (np.dtype("<f4"), 4), "F16": (np.dtype("<f2"), 2), "BF16": (None, 2),
          "F64": (np.dtype("<f8"), 8), "I8": (np.dtype("i1"), 1), "I32": (np.dtype("<i4"), 4)}


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def bf16_bits_to_f32(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << 16).view(np.float32)


def encode(values: np.ndarray, dtype: str):
    """(bytes, the float32 values those bytes hold) for a float array stored as `dtype`."""
    values = np.asarray(values, dtype=np.float32)
    if dtype == "BF16":
        bits = to_bf16_bits(values)
        return bits.astype("<u2").tobytes(), bf16_bits_to_f32(bits).reshape(values.shape)
    np_type, _ = DTYPES[dtype]
    stored = values.astype(np_type)
    return stored.tobytes(), stored.astype(np.float32)


@dataclass
class Entry:
    name: str
    dtype: str
    shape: list
    data: bytes


@dataclass
class Layout:
    header_len: int = 0
    data_start: int = 0
    offsets: dict = field(default_factory=dict)  # name -> (begin, end), relative to the data


def serialize(entries: list, metadata: dict | None = None, header: dict | None = None,
              pad_to: int = 8):
    """(bytes, Layout). `header` replaces the generated JSON header when given (tests that
    break it); the data section is always every entry's bytes in order."""
    layout = Layout()
    h = {}
    if metadata is not None:
        h["__metadata__"] = metadata
    at = 0
    for e in entries:
        h[e.name] = {"dtype": e.dtype, "shape": list(e.shape), "data_offsets": [at, at + len(e.data)]}
        layout.offsets[e.name] = (at, at + len(e.data))
        at += len(e.data)
    text = json.dumps(header if header is not None else h, separators=(",", ":")).encode()
    if pad_to > 1:
        text += b" " * ((-(8 + len(text))) % pad_to)
    layout.header_len = len(text)
    layout.data_start = 8 + len(text)
    return struct.pack("<Q", len(text)) + text + b"".join(e.data for e in entries), layout


def write_safetensors(path: str, entries: list, metadata: dict | None = None):
    data, _ = serialize(entries, metadata)
    with open(path, "wb") as f:
        f.write(data)


# ----------------------------------------------------------------------------------------------
# Llama checkpoints
# ----------------------------------------------------------------------------------------------
@dataclass
class HfConfig:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    head_dim: int | None = None       # None: not written (hidden // heads)
    rms_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_pos: int = 64
    tied: bool = False
    rope_scaling: dict | None = None
    architecture: str = "LlamaForCausalLM"
    hidden_act: str = "silu"

    @property
    def hd(self) -> int:
        return self.head_dim if self.head_dim is not None else self.hidden // self.heads

    def config_json(self) -> dict:
        c = {"architectures": [self.architecture], "model_type": "llama",
             "hidden_size": self.hidden, "num_hidden_layers": self.layers,
             "num_attention_heads": self.heads, "num_key_value_heads": self.kv_heads,
             "intermediate_size": self.ffn, "vocab_size": self.vocab,
             "max_position_embeddings": self.max_pos, "rms_norm_eps": self.rms_eps,
             "rope_theta": self.rope_theta, "tie_word_embeddings": self.tied,
             "hidden_act": self.hidden_act, "torch_dtype": "float32",
             "bos_token_id": 1, "eos_token_id": 2}
        if self.head_dim is not None:
            c["head_dim"] = self.head_dim
        if self.rope_scaling is not None:
            c["rope_scaling"] = self.rope_scaling
        return c


def layer_tensors(dim: int, n_heads: int, n_kv_heads: int, head_dim: int, ffn: int) -> list:
    """One Llama layer's tensors in file order: (Hugging Face name, GGUF name, PyTorch shape
    ([out, in] for matrices)), names relative to the layer ("model.layers.L." / "blk.L.").
    The one list of them: llama_reference.tensor_shapes reads it for its GGUF names."""
    q, kv = n_heads * head_dim, n_kv_heads * head_dim
    return [
        ("input_layernorm.weight", "attn_norm.weight", (dim,)),
        ("self_attn.q_proj.weight", "attn_q.weight", (q, dim)),
        ("self_attn.k_proj.weight", "attn_k.weight", (kv, dim)),
        ("self_attn.v_proj.weight", "attn_v.weight", (kv, dim)),
        ("self_attn.o_proj.weight", "attn_output.weight", (dim, q)),
        ("post_attention_layernorm.weight", "ffn_norm.weight", (dim,)),
        ("mlp.gate_proj.weight", "ffn_gate.weight", (ffn, dim)),
        ("mlp.up_proj.weight", "ffn_up.weight", (ffn, dim)),
        ("mlp.down_proj.weight", "ffn_down.weight", (dim, ffn)),
    ]


def tensor_shapes(cfg: HfConfig) -> dict:
    """HF tensor name -> PyTorch shape ([out, in]), in the order HF writes them."""
    s = {"model.embed_tokens.weight": (cfg.vocab, cfg.hidden)}
    layer = layer_tensors(cfg.hidden, cfg.heads, cfg.kv_heads, cfg.hd, cfg.ffn)
    for l in range(cfg.layers):
        for name, _, shape in layer:
            s[f"model.layers.{l}.{name}"] = shape
    s["model.norm.weight"] = (cfg.hidden,)
    if not cfg.tied:
        s["lm_head.weight"] = (cfg.vocab, cfg.hidden)
    return s


def random_weights(cfg: HfConfig, seed: int) -> dict:
    """float32 weights: embeddings ~ N(0, 1), matrices ~ N(0, 1/in), norms ~ 1 + N(0, 0.1^2)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in tensor_shapes(cfg).items():
        if len(shape) == 1:
            w = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name == "model.embed_tokens.weight":
            w = rng.standard_normal(shape)
        else:
            w = rng.standard_normal(shape) / math.sqrt(shape[1])
        out[name] = w.astype(np.float32)
    return out


def write_checkpoint(path: str, cfg: HfConfig, weights: dict, dtype: str = "F32", shards: int = 1,
                     index: bool = True, norm_dtype: str | None = None,
                     generation_config: dict | None = None, config_override: dict | None = None) -> dict:
    """Writes the folder; returns {name: float32 values the files hold}. shards > 1 splits the
    tensors into that many model-0000i-of-0000n.safetensors files (with the index json when
    `index`, else the loader finds them by their suffix). Norms are stored as `norm_dtype`
    (default: `dtype`)."""
    os.makedirs(path, exist_ok=True)
    config = cfg.config_json()
    config.update(config_override or {})
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    if generation_config is not None:
        with open(os.path.join(path, "generation_config.json"), "w") as f:
            json.dump(generation_config, f)
    names = list(weights)
    held = {}
    entries = []
    for name in names:
        t = (norm_dtype or dtype) if weights[name].ndim == 1 else dtype
        data, values = encode(weights[name], t)
        held[name] = values
        entries.append(Entry(name, t, list(weights[name].shape), data))
    if shards == 1:
        write_safetensors(os.path.join(path, "model.safetensors"), entries, {"format": "pt"})
        return held
    per = math.ceil(len(entries) / shards)
    weight_map = {}
    total = 0
    for i in range(shards):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = entries[i * per:(i + 1) * per]
        write_safetensors(os.path.join(path, fname), part, {"format": "pt"})
        for e in part:
            weight_map[e.name] = fname
            total += len(e.data)
    if index:
        with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return held

"""A minimal GGUF v3 writer and reader plus ggml block encoders/decoders, for skiff's tests.

Independent of the C++ engine: written from the GGUF spec and ggml's block definitions
(ggml-common.h / ggml-quants.c). Only struct + numpy.

Conventions
- Tensor dims are written ne[0]-first: ne[0] is the row length (the input dimension of a weight
  matrix). A PyTorch Linear weight of shape [out, in] is written with dims [in, out] and its
  bytes in row-major [out][in] order. In this module a tensor's values are always handled as a
  2-D numpy array [rows, ne0] (1-D for vectors).
- Every encoder returns (bytes, dequantized float32 array): the dequantized values are decoded
  from the very bytes written, with ggml's float32 arithmetic, so a reference that computes with
  them uses exactly the weights the file holds.
- F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 are quantized from given values with ggml's
  reference rounding; Q4_K, Q5_K and Q6_K super-blocks are generated at random (random quants
  and sub-block scales, sane positive f16 super-block scales) -- any such block is valid.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
DEFAULT_ALIGNMENT = 32

# Metadata value types.
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
_SCALAR_FORMATS = {
    UINT8: "<B", INT8: "<b", UINT16: "<H", INT16: "<h", UINT32: "<I", INT32: "<i",
    FLOAT32: "<f", BOOL: "<?", UINT64: "<Q", INT64: "<q", FLOAT64: "<d",
}

# ggml tensor type ids.
F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = 0, 1, 2, 3, 6, 7, 8
Q4_K, Q5_K, Q6_K, BF16 = 12, 13, 14, 30

# type id -> (name, elements per block, bytes per block)
TYPE_INFO = {
    F32: ("F32", 1, 4), F16: ("F16", 1, 2), BF16: ("BF16", 1, 2),
    Q4_0: ("Q4_0", 32, 18), Q4_1: ("Q4_1", 32, 20), Q5_0: ("Q5_0", 32, 22),
    Q5_1: ("Q5_1", 32, 24), Q8_0: ("Q8_0", 32, 34),
    Q4_K: ("Q4_K", 256, 144), Q5_K: ("Q5_K", 256, 176), Q6_K: ("Q6_K", 256, 210),
}
TYPE_BY_NAME = {info[0]: t for t, info in TYPE_INFO.items()}

_f32 = np.float32


def block_size(ggml_type: int) -> int:
    return TYPE_INFO[ggml_type][1]


def tensor_nbytes(ggml_type: int, dims) -> int:
    _, bs, bb = TYPE_INFO[ggml_type]
    n = 1
    for d in dims:
        n *= int(d)  # Python ints: no overflow on hostile dims
    if dims[0] % bs != 0:
        raise ValueError(f"row length {dims[0]} is not a multiple of {bs}")
    return n // bs * bb


# ----------------------------------------------------------------------------------------------
# Block layouts (numpy structured dtypes are packed, like the C structs).
# ----------------------------------------------------------------------------------------------
_BLOCK_DTYPES = {
    Q8_0: np.dtype([("d", "<f2"), ("qs", "i1", 32)]),
    Q4_0: np.dtype([("d", "<f2"), ("qs", "u1", 16)]),
    Q4_1: np.dtype([("d", "<f2"), ("m", "<f2"), ("qs", "u1", 16)]),
    Q5_0: np.dtype([("d", "<f2"), ("qh", "<u4"), ("qs", "u1", 16)]),
    Q5_1: np.dtype([("d", "<f2"), ("m", "<f2"), ("qh", "<u4"), ("qs", "u1", 16)]),
    Q4_K: np.dtype([("d", "<f2"), ("dmin", "<f2"), ("scales", "u1", 12), ("qs", "u1", 128)]),
    Q5_K: np.dtype([("d", "<f2"), ("dmin", "<f2"), ("scales", "u1", 12), ("qh", "u1", 32),
                    ("qs", "u1", 128)]),
    Q6_K: np.dtype([("ql", "u1", 128), ("qh", "u1", 64), ("scales", "i1", 16), ("d", "<f2")]),
}
for _t, _dt in _BLOCK_DTYPES.items():
    assert _dt.itemsize == TYPE_INFO[_t][2], (_t, _dt.itemsize)


def _f16_to_f32(h) -> np.ndarray:
    return np.asarray(h, dtype="<f2").astype(_f32)


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even float32 -> bfloat16 bits (NaN kept quiet), as ggml does."""
    u = np.ascontiguousarray(x, dtype=_f32).view(np.uint32).astype(np.uint64)
    is_nan = (u & 0x7FFFFFFF) > 0x7F800000
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF
    nan_bits = ((u >> 16) | 64) & 0xFFFF
    return np.where(is_nan, nan_bits, rounded).astype(np.uint16)


def bf16_bits_to_f32(b: np.ndarray) -> np.ndarray:
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << 16).view(_f32)


def _round_away(v: np.ndarray) -> np.ndarray:
    """C roundf: half away from zero."""
    return np.sign(v) * np.floor(np.abs(v) + _f32(0.5))


def _safe_inverse(d: np.ndarray) -> np.ndarray:
    out = np.zeros_like(d, dtype=_f32)
    nz = d != 0
    out[nz] = _f32(1.0) / d[nz]
    return out


def _max_by_abs(xb: np.ndarray) -> np.ndarray:
    # ggml scans with a strict '>' on |x|: the first element of largest magnitude wins.
    idx = np.argmax(np.abs(xb), axis=1)
    return xb[np.arange(xb.shape[0]), idx]


def _pack_nibbles(q: np.ndarray) -> np.ndarray:
    """q: [nb, 32] ints 0..15 -> [nb, 16] bytes: low nibble = element j, high = element j+16."""
    q = q.astype(np.uint8)
    return (q[:, :16] & 0x0F) | ((q[:, 16:] & 0x0F) << 4)


def _pack_high_bits(q: np.ndarray) -> np.ndarray:
    """q: [nb, 32] ints 0..31 -> uint32 qh, bit j = bit 4 of element j."""
    bits = ((q.astype(np.uint32) >> 4) & 1) << np.arange(32, dtype=np.uint32)
    return np.bitwise_or.reduce(bits, axis=1).astype(np.uint32)


# ----------------------------------------------------------------------------------------------
# Quantizers (ggml reference rounding). Input: float32 [rows, ne0]; output: raw bytes.
# ----------------------------------------------------------------------------------------------
def _blocks(x: np.ndarray, qk: int) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=_f32)
    assert x.shape[-1] % qk == 0, f"row length {x.shape[-1]} is not a multiple of {qk}"
    return x.reshape(-1, qk)


def _quantize_q8_0(x):
    xb = _blocks(x, 32)
    amax = np.max(np.abs(xb), axis=1)
    d = (amax / _f32(127)).astype(_f32)
    inv = _safe_inverse(d)
    blk = np.zeros(xb.shape[0], _BLOCK_DTYPES[Q8_0])
    blk["d"] = d.astype("<f2")
    blk["qs"] = _round_away(xb * inv[:, None]).astype(np.int8)
    return blk.tobytes()


def _quantize_q4_0(x):
    xb = _blocks(x, 32)
    d = (_max_by_abs(xb) / _f32(-8)).astype(_f32)
    inv = _safe_inverse(d)
    q = np.minimum(15, np.trunc(xb * inv[:, None] + _f32(8.5))).astype(np.int32)
    blk = np.zeros(xb.shape[0], _BLOCK_DTYPES[Q4_0])
    blk["d"] = d.astype("<f2")
    blk["qs"] = _pack_nibbles(q)
    return blk.tobytes()


def _quantize_q4_1(x):
    xb = _blocks(x, 32)
    mn, mx = xb.min(axis=1), xb.max(axis=1)
    d = ((mx - mn) / _f32(15)).astype(_f32)
    inv = _safe_inverse(d)
    q = np.minimum(15, np.trunc((xb - mn[:, None]) * inv[:, None] + _f32(0.5))).astype(np.int32)
    blk = np.zeros(xb.shape[0], _BLOCK_DTYPES[Q4_1])
    blk["d"] = d.astype("<f2")
    blk["m"] = mn.astype("<f2")
    blk["qs"] = _pack_nibbles(q)
    return blk.tobytes()


def _quantize_q5_0(x):
    xb = _blocks(x, 32)
    d = (_max_by_abs(xb) / _f32(-16)).astype(_f32)
    inv = _safe_inverse(d)
    q = np.minimum(31, np.trunc(xb * inv[:, None] + _f32(16.5))).astype(np.int32)
    # ggml stores element j's 5th bit at qh bit j and element j+16's at bit j+16: with q in
    # natural order that is simply bit j of qh for element j.
    blk = np.zeros(xb.shape[0], _BLOCK_DTYPES[Q5_0])
    blk["d"] = d.astype("<f2")
    blk["qh"] = _pack_high_bits(q)
    blk["qs"] = _pack_nibbles(q)
    return blk.tobytes()


def _quantize_q5_1(x):
    xb = _blocks(x, 32)
    mn, mx = xb.min(axis=1), xb.max(axis=1)
    d = ((mx - mn) / _f32(31)).astype(_f32)
    inv = _safe_inverse(d)
    q = np.minimum(31, np.trunc((xb - mn[:, None]) * inv[:, None] + _f32(0.5))).astype(np.int32)
    blk = np.zeros(xb.shape[0], _BLOCK_DTYPES[Q5_1])
    blk["d"] = d.astype("<f2")
    blk["m"] = mn.astype("<f2")
    blk["qh"] = _pack_high_bits(q)
    blk["qs"] = _pack_nibbles(q)
    return blk.tobytes()


# ----------------------------------------------------------------------------------------------
# Decoders: bytes -> float32 [rows, ne0], with ggml's float32 arithmetic.
# ----------------------------------------------------------------------------------------------
def _unpack_nibbles(qs: np.ndarray) -> np.ndarray:
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int32)


def _unpack_high_bits(qh: np.ndarray) -> np.ndarray:
    return ((qh[:, None].astype(np.uint32) >> np.arange(32, dtype=np.uint32)) & 1).astype(np.int32)


def _k_scales_mins(scales: np.ndarray):
    """get_scale_min_k4 for j = 0..7: 6-bit scales and mins packed into 12 bytes."""
    s = scales.astype(np.int32)
    sc = np.empty((s.shape[0], 8), np.int32)
    mn = np.empty((s.shape[0], 8), np.int32)
    for j in range(4):
        sc[:, j] = s[:, j] & 63
        mn[:, j] = s[:, j + 4] & 63
    for j in range(4, 8):
        sc[:, j] = (s[:, j + 4] & 0x0F) | ((s[:, j - 4] >> 6) << 4)
        mn[:, j] = (s[:, j + 4] >> 4) | ((s[:, j] >> 6) << 4)
    return sc, mn


def _dequantize_blocks(ggml_type: int, blk: np.ndarray) -> np.ndarray:
    nb = blk.shape[0]
    if ggml_type == Q8_0:
        return _f16_to_f32(blk["d"])[:, None] * blk["qs"].astype(_f32)
    if ggml_type == Q4_0:
        q = _unpack_nibbles(blk["qs"]) - 8
        return q.astype(_f32) * _f16_to_f32(blk["d"])[:, None]
    if ggml_type == Q4_1:
        q = _unpack_nibbles(blk["qs"])
        return q.astype(_f32) * _f16_to_f32(blk["d"])[:, None] + _f16_to_f32(blk["m"])[:, None]
    if ggml_type in (Q5_0, Q5_1):
        q = _unpack_nibbles(blk["qs"]) | (_unpack_high_bits(blk["qh"]) << 4)
        if ggml_type == Q5_0:
            return (q - 16).astype(_f32) * _f16_to_f32(blk["d"])[:, None]
        return q.astype(_f32) * _f16_to_f32(blk["d"])[:, None] + _f16_to_f32(blk["m"])[:, None]
    if ggml_type in (Q4_K, Q5_K):
        d = _f16_to_f32(blk["d"])[:, None]
        dmin = _f16_to_f32(blk["dmin"])[:, None]
        sc, mn = _k_scales_mins(blk["scales"])
        d_sub = (d * sc.astype(_f32)).astype(_f32)       # [nb, 8]
        m_sub = (dmin * mn.astype(_f32)).astype(_f32)    # [nb, 8]
        y = np.empty((nb, 256), _f32)
        for k in range(4):  # 64 elements per step: 32 low nibbles then 32 high nibbles
            ql = blk["qs"][:, 32 * k:32 * k + 32].astype(np.int32)
            lo, hi = ql & 0x0F, ql >> 4
            if ggml_type == Q5_K:
                qh = blk["qh"].astype(np.int32)
                lo = lo + np.where(qh & (1 << (2 * k)), 16, 0)
                hi = hi + np.where(qh & (1 << (2 * k + 1)), 16, 0)
            y[:, 64 * k:64 * k + 32] = d_sub[:, 2 * k:2 * k + 1] * lo.astype(_f32) - m_sub[:, 2 * k:2 * k + 1]
            y[:, 64 * k + 32:64 * k + 64] = d_sub[:, 2 * k + 1:2 * k + 2] * hi.astype(_f32) - m_sub[:, 2 * k + 1:2 * k + 2]
        return y
    if ggml_type == Q6_K:
        d = _f16_to_f32(blk["d"])[:, None]
        y = np.empty((nb, 256), _f32)
        for n in range(2):  # 128 elements per half
            ql = blk["ql"][:, 64 * n:64 * n + 64].astype(np.int32)
            qh = blk["qh"][:, 32 * n:32 * n + 32].astype(np.int32)
            sc = blk["scales"][:, 8 * n:8 * n + 8].astype(_f32)
            q1 = ((ql[:, :32] & 0x0F) | (((qh >> 0) & 3) << 4)) - 32
            q2 = ((ql[:, 32:] & 0x0F) | (((qh >> 2) & 3) << 4)) - 32
            q3 = ((ql[:, :32] >> 4) | (((qh >> 4) & 3) << 4)) - 32
            q4 = ((ql[:, 32:] >> 4) | (((qh >> 6) & 3) << 4)) - 32
            for part, q in enumerate((q1, q2, q3, q4)):
                # sub-block scale index: is = l/16 (+2 per part) within this half
                s = np.repeat(sc[:, 2 * part:2 * part + 2], 16, axis=1)
                y[:, 128 * n + 32 * part:128 * n + 32 * part + 32] = (d * s).astype(_f32) * q.astype(_f32)
        return y
    raise ValueError(f"no decoder for type {ggml_type}")


def dequantize(data: bytes, ggml_type: int, shape) -> np.ndarray:
    """Decodes raw tensor bytes into float32 of `shape` (row-major, last axis = ne[0])."""
    shape = tuple(int(s) for s in shape)
    if ggml_type == F32:
        return np.frombuffer(data, "<f4").astype(_f32).reshape(shape)
    if ggml_type == F16:
        return np.frombuffer(data, "<f2").astype(_f32).reshape(shape)
    if ggml_type == BF16:
        return bf16_bits_to_f32(np.frombuffer(data, "<u2")).reshape(shape)
    blk = np.frombuffer(data, _BLOCK_DTYPES[ggml_type])
    return _dequantize_blocks(ggml_type, blk).reshape(shape)


def encode(x: np.ndarray, ggml_type: int):
    """Quantizes float values x ([rows, ne0] or a vector) to ggml_type.
    Returns (bytes, dequantized float32 array of x's shape)."""
    x = np.ascontiguousarray(x, dtype=_f32)
    if ggml_type == F32:
        data = x.astype("<f4").tobytes()
    elif ggml_type == F16:
        data = x.astype("<f2").tobytes()
    elif ggml_type == BF16:
        data = f32_to_bf16_bits(x).astype("<u2").tobytes()
    elif ggml_type == Q8_0:
        data = _quantize_q8_0(x)
    elif ggml_type == Q4_0:
        data = _quantize_q4_0(x)
    elif ggml_type == Q4_1:
        data = _quantize_q4_1(x)
    elif ggml_type == Q5_0:
        data = _quantize_q5_0(x)
    elif ggml_type == Q5_1:
        data = _quantize_q5_1(x)
    elif ggml_type in (Q4_K, Q5_K, Q6_K):
        raise ValueError("K-quants are generated, not quantized: use random_k_quant")
    else:
        raise ValueError(f"unsupported type {ggml_type}")
    return data, dequantize(data, ggml_type, x.shape)


def random_k_quant(shape, ggml_type: int, rng: np.random.Generator, target_std: float):
    """Random valid Q4_K/Q5_K/Q6_K super-blocks for a tensor of `shape` ([rows, ne0], ne0 a
    multiple of 256): random quants and 6/8-bit sub-block scales, positive f16 super-block
    scales chosen so the weights have roughly `target_std` and roughly zero mean.
    Returns (bytes, dequantized float32 array)."""
    rows, ne0 = int(shape[0]), int(shape[1])
    assert ne0 % 256 == 0, f"row length {ne0} is not a multiple of 256"
    nb = rows * ne0 // 256
    blk = np.zeros(nb, _BLOCK_DTYPES[ggml_type])
    jitter = rng.uniform(0.5, 1.5, nb)
    if ggml_type in (Q4_K, Q5_K):
        qmax = 15 if ggml_type == Q4_K else 31
        # weight = d*sc*q - dmin*m, sc, m ~ U{0..63}, q ~ U{0..qmax}
        d = target_std * jitter / (31.5 * (qmax / 2.0 + 0.5 * qmax / np.sqrt(3.0)))
        blk["d"] = d.astype("<f2")
        blk["dmin"] = (d * qmax / 2.0).astype("<f2")
        blk["scales"] = rng.integers(0, 256, (nb, 12), dtype=np.uint8)
        blk["qs"] = rng.integers(0, 256, (nb, 128), dtype=np.uint8)
        if ggml_type == Q5_K:
            blk["qh"] = rng.integers(0, 256, (nb, 32), dtype=np.uint8)
    elif ggml_type == Q6_K:
        # weight = d*sc*(q-32), sc ~ U{-64..63}, q-32 ~ U{-32..31}
        blk["d"] = (target_std * jitter / (37.0 * 18.5)).astype("<f2")
        blk["scales"] = rng.integers(-64, 64, (nb, 16), dtype=np.int8)
        blk["ql"] = rng.integers(0, 256, (nb, 128), dtype=np.uint8)
        blk["qh"] = rng.integers(0, 256, (nb, 64), dtype=np.uint8)
    else:
        raise ValueError(f"{ggml_type} is not a K-quant")
    assert np.all(np.isfinite(_f16_to_f32(blk["d"]))) and np.all(_f16_to_f32(blk["d"]) > 0)
    data = blk.tobytes()
    return data, dequantize(data, ggml_type, (rows, ne0))


# ----------------------------------------------------------------------------------------------
# GGUF writer
# ----------------------------------------------------------------------------------------------
@dataclass
class _Tensor:
    name: str
    dims: list
    ggml_type: int
    data: bytes


@dataclass
class Layout:
    """Absolute byte offsets of every field of a serialized file, for corruption tests."""
    tensor_count_offset: int = 8
    kv_count_offset: int = 16
    kv: dict = field(default_factory=dict)       # key -> {key_len, type, value} offsets
    tensors: dict = field(default_factory=dict)  # name -> {name_len, n_dims, dims[], type, offset, data, nbytes}
    data_start: int = 0
    data_end: int = 0   # end of the last tensor's bytes (before trailing padding)
    file_size: int = 0


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def _gguf_string(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _encode_value(vtype: int, value, array_type: int | None = None) -> bytes:
    if vtype == STRING:
        return _gguf_string(value)
    if vtype == ARRAY:
        out = [struct.pack("<IQ", array_type, len(value))]
        if array_type in _SCALAR_FORMATS:
            fmt = _SCALAR_FORMATS[array_type]
            out.append(np.asarray(value, dtype=np.dtype(fmt)).tobytes())
        elif array_type == STRING:
            out.extend(_gguf_string(v) for v in value)
        else:
            raise ValueError(f"unsupported array element type {array_type}")
        return b"".join(out)
    return struct.pack(_SCALAR_FORMATS[vtype], value)


class GGUFWriter:
    def __init__(self, alignment: int = DEFAULT_ALIGNMENT):
        self.alignment = alignment
        self.kv: list = []       # (key, type, value, array_type)
        self.tensors: list[_Tensor] = []
        if alignment != DEFAULT_ALIGNMENT:
            self.add_u32("general.alignment", alignment)

    # metadata
    def add(self, key: str, vtype: int, value, array_type: int | None = None):
        self.kv = [kv for kv in self.kv if kv[0] != key]
        self.kv.append((key, vtype, value, array_type))

    def remove(self, key: str):
        self.kv = [kv for kv in self.kv if kv[0] != key]

    def add_u32(self, key, v): self.add(key, UINT32, int(v))
    def add_i32(self, key, v): self.add(key, INT32, int(v))
    def add_u64(self, key, v): self.add(key, UINT64, int(v))
    def add_f32(self, key, v): self.add(key, FLOAT32, float(v))
    def add_bool(self, key, v): self.add(key, BOOL, bool(v))
    def add_string(self, key, v): self.add(key, STRING, str(v))
    def add_array_str(self, key, v): self.add(key, ARRAY, list(v), STRING)
    def add_array_f32(self, key, v): self.add(key, ARRAY, list(map(float, v)), FLOAT32)
    def add_array_i32(self, key, v): self.add(key, ARRAY, list(map(int, v)), INT32)

    # tensors
    def add_tensor(self, name: str, dims, ggml_type: int, data: bytes, check: bool = True):
        dims = [int(d) for d in dims]
        if check:
            assert len(data) == tensor_nbytes(ggml_type, dims), (name, len(data), dims)
        self.tensors.append(_Tensor(name, dims, ggml_type, bytes(data)))

    def serialize(self) -> tuple[bytes, Layout]:
        lay = Layout()
        out = bytearray()
        out += GGUF_MAGIC + struct.pack("<IQQ", GGUF_VERSION, len(self.tensors), len(self.kv))
        for key, vtype, value, array_type in self.kv:
            rec = {"key_len": len(out)}
            out += _gguf_string(key)
            rec["type"] = len(out)
            out += struct.pack("<I", vtype)
            rec["value"] = len(out)
            out += _encode_value(vtype, value, array_type)
            lay.kv[key] = rec
        offset = 0
        offsets = []
        for t in self.tensors:
            offsets.append(offset)
            offset = _align(offset + len(t.data), self.alignment)
        for t, off in zip(self.tensors, offsets):
            rec = {"name_len": len(out)}
            out += _gguf_string(t.name)
            rec["n_dims"] = len(out)
            out += struct.pack("<I", len(t.dims))
            rec["dims"] = [len(out) + 8 * i for i in range(len(t.dims))]
            out += struct.pack(f"<{len(t.dims)}Q", *t.dims)
            rec["type"] = len(out)
            out += struct.pack("<I", t.ggml_type)
            rec["offset"] = len(out)
            out += struct.pack("<Q", off)
            rec["nbytes"] = len(t.data)
            lay.tensors[t.name] = rec
        out += b"\0" * (_align(len(out), self.alignment) - len(out))
        lay.data_start = len(out)
        for t, off in zip(self.tensors, offsets):
            assert len(out) == lay.data_start + off
            lay.tensors[t.name]["data"] = len(out)
            out += t.data
            lay.data_end = len(out)
            out += b"\0" * (_align(len(out), self.alignment) - len(out))
        lay.file_size = len(out)
        return bytes(out), lay

    def write(self, path: str) -> Layout:
        data, lay = self.serialize()
        with open(path, "wb") as f:
            f.write(data)
        return lay


# ----------------------------------------------------------------------------------------------
# GGUF reader (small, strict; for self-checks and for reading peer files)
# ----------------------------------------------------------------------------------------------
@dataclass
class GGUFTensorInfo:
    name: str
    dims: list
    ggml_type: int
    offset: int       # relative to data_start
    data: bytes


@dataclass
class GGUFFile:
    version: int
    alignment: int
    metadata: dict    # key -> python value (arrays as lists)
    types: dict       # key -> (type, array element type or None)
    tensors: dict     # name -> GGUFTensorInfo (in file order)
    data_start: int

    def tensor_values(self, name: str) -> np.ndarray:
        """Dequantized float32 values, shape [ne1, ne0] for matrices, [ne0] for vectors."""
        t = self.tensors[name]
        shape = tuple(reversed(t.dims))
        return dequantize(t.data, t.ggml_type, shape)


class _Cursor:
    def __init__(self, buf: bytes):
        self.buf, self.pos = buf, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise ValueError(f"gguf: read of {n} bytes at offset {self.pos} past end ({len(self.buf)})")
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return self.take(self.unpack("<Q")).decode("utf-8")

    def value(self, vtype: int):
        if vtype == STRING:
            return self.string(), None
        if vtype == ARRAY:
            etype, n = self.unpack("<I"), self.unpack("<Q")
            if etype in _SCALAR_FORMATS:
                dt = np.dtype(_SCALAR_FORMATS[etype])
                return np.frombuffer(self.take(n * dt.itemsize), dt).tolist(), etype
            if etype == STRING:
                return [self.string() for _ in range(n)], etype
            raise ValueError(f"gguf: unsupported array element type {etype}")
        if vtype in _SCALAR_FORMATS:
            return self.unpack(_SCALAR_FORMATS[vtype]), None
        raise ValueError(f"gguf: unknown value type {vtype}")


def parse_gguf(buf: bytes) -> GGUFFile:
    c = _Cursor(buf)
    if c.take(4) != GGUF_MAGIC:
        raise ValueError("gguf: bad magic")
    version = c.unpack("<I")
    if version not in (2, 3):
        raise ValueError(f"gguf: unsupported version {version}")
    n_tensors, n_kv = c.unpack("<Q"), c.unpack("<Q")
    metadata, types = {}, {}
    for _ in range(n_kv):
        key = c.string()
        vtype = c.unpack("<I")
        metadata[key], etype = c.value(vtype)
        types[key] = (vtype, etype)
    alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))
    infos = []
    for _ in range(n_tensors):
        name = c.string()
        n_dims = c.unpack("<I")
        if not 1 <= n_dims <= 4:
            raise ValueError(f"gguf: tensor {name} has {n_dims} dims")
        dims = [c.unpack("<Q") for _ in range(n_dims)]
        ggml_type = c.unpack("<I")
        offset = c.unpack("<Q")
        if ggml_type not in TYPE_INFO:
            raise ValueError(f"gguf: tensor {name} has unknown type {ggml_type}")
        if offset % alignment:
            raise ValueError(f"gguf: tensor {name} offset {offset} not aligned")
        infos.append((name, dims, ggml_type, offset))
    data_start = _align(c.pos, alignment)
    tensors = {}
    for name, dims, ggml_type, offset in infos:
        nbytes = tensor_nbytes(ggml_type, dims)
        begin = data_start + offset
        if begin + nbytes > len(buf):
            raise ValueError(f"gguf: tensor {name} data past end of file")
        tensors[name] = GGUFTensorInfo(name, dims, ggml_type, offset, buf[begin:begin + nbytes])
    return GGUFFile(version, alignment, metadata, types, tensors, data_start)


def read_gguf(path: str) -> GGUFFile:
    with open(path, "rb") as f:
        return parse_gguf(f.read())

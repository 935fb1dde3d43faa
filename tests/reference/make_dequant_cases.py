#!/usr/bin/python3
"""Independent NumPy reference for skiff's dequantizers.

Usage: make_dequant_cases.py OUT.gguf [SEED]

For each type it writes random blocks (random bytes, with the f16 scale fields replaced by
sane finite values) as tensor "<type>" and their dequantization, computed here with NumPy from
ggml's block layouts (ggml-common.h), as F32 tensor "<type>.expected". The C++ test parses the
file with skiff's own reader and checks its dequantize_row against "<type>.expected" bit for
bit. Arithmetic is float32 throughout, one rounding per operation, in the order ggml's
reference dequantize_row_* uses, so results are exact.

The GGUF is written here with struct/NumPy (v3, little-endian, alignment 32).
"""
import struct
import sys

import numpy as np

F32 = np.float32
ROW = 512  # elements per row: a multiple of 256, so every type has whole blocks
ROWS = 3

# name: (GGUF type id, elements per block, bytes per block)
TYPES = {
    "f16": (1, 1, 2),
    "bf16": (30, 1, 2),
    "q4_0": (2, 32, 18),
    "q4_1": (3, 32, 20),
    "q5_0": (6, 32, 22),
    "q5_1": (7, 32, 24),
    "q8_0": (8, 32, 34),
    "q4_K": (12, 256, 144),
    "q5_K": (13, 256, 176),
    "q6_K": (14, 256, 210),
}


# ---- field helpers ------------------------------------------------------------------------

def half_at(blocks, offset):
    """The f16 field at byte `offset` of every block, as float32 (exact)."""
    raw = np.ascontiguousarray(blocks[:, offset:offset + 2])
    return raw.view("<f2").reshape(-1).astype(F32)


def set_half(blocks, offset, values):
    blocks[:, offset:offset + 2] = np.asarray(values, dtype="<f2").view(np.uint8).reshape(-1, 2)


def sane_halves(rng, n, lo, hi):
    """Finite f16 scales of either sign spanning a few orders of magnitude, plus some zeros."""
    magnitude = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    sign = rng.choice([-1.0, 1.0], n)
    values = (magnitude * sign).astype(np.float16)
    values[rng.random(n) < 0.05] = 0
    return values


def col(a):
    return a.reshape(-1, 1)


# ---- dequantizers, from the block definitions ---------------------------------------------

def deq_f16(raw):
    return raw.view("<f2").astype(F32)


def deq_bf16(raw):
    return (raw.view("<u2").astype(np.uint32) << 16).view(F32)


def nibbles(qs):
    """Low nibbles are elements 0..15 of a 32-block, high nibbles 16..31."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int32)


def fifth_bits(qh_bytes):
    """Bit j of the little-endian u32 qh is the 5th bit of element j."""
    qh = np.ascontiguousarray(qh_bytes).view("<u4").reshape(-1, 1).astype(np.int64)
    return (((qh >> np.arange(32)) & 1) << 4).astype(np.int32)


def deq_q4_0(b):
    d = col(half_at(b, 0))
    q = nibbles(b[:, 2:18]) - 8
    return q.astype(F32) * d


def deq_q4_1(b):
    d, m = col(half_at(b, 0)), col(half_at(b, 2))
    q = nibbles(b[:, 4:20])
    return q.astype(F32) * d + m


def deq_q5_0(b):
    d = col(half_at(b, 0))
    q = (nibbles(b[:, 6:22]) | fifth_bits(b[:, 2:6])) - 16
    return q.astype(F32) * d


def deq_q5_1(b):
    d, m = col(half_at(b, 0)), col(half_at(b, 2))
    q = nibbles(b[:, 8:24]) | fifth_bits(b[:, 4:8])
    return q.astype(F32) * d + m


def deq_q8_0(b):
    d = col(half_at(b, 0))
    q = np.ascontiguousarray(b[:, 2:34]).view(np.int8)
    return q.astype(F32) * d


def k_scales_mins(scales):
    """Unpack the 12-byte field into 8 six-bit scales and 8 six-bit mins per super-block.

    Bytes 0..3: scale j (low 6 bits), bytes 4..7: min j (low 6 bits), for j < 4. For j >= 4 the
    low 4 bits come from byte j+4 (scale: low nibble, min: high nibble) and the top 2 bits from
    the spare top bits of bytes j-4 (scale) and j (min).
    """
    s = scales.astype(np.int32)
    sc = np.zeros((s.shape[0], 8), np.int32)
    mn = np.zeros((s.shape[0], 8), np.int32)
    for j in range(8):
        if j < 4:
            sc[:, j] = s[:, j] & 63
            mn[:, j] = s[:, j + 4] & 63
        else:
            sc[:, j] = (s[:, j + 4] & 0xF) | ((s[:, j - 4] >> 6) << 4)
            mn[:, j] = (s[:, j + 4] >> 4) | ((s[:, j] >> 6) << 4)
    return sc, mn


def k_apply(q, d, dmin, sc, mn):
    """q: (nb, 8, 32) unsigned quants of 8 sub-blocks; y = (d*sc)*q - (dmin*m)."""
    d1 = col(d) * sc.astype(F32)      # (nb, 8) float32 products
    m1 = col(dmin) * mn.astype(F32)
    y = d1[:, :, None] * q.astype(F32) - m1[:, :, None]
    return y.reshape(q.shape[0], -1)


def deq_q4_K(b):
    d, dmin = half_at(b, 0), half_at(b, 2)
    sc, mn = k_scales_mins(b[:, 4:16])
    qs = b[:, 16:144].reshape(-1, 4, 32).astype(np.int32)  # 4 chunks of 32 bytes
    # In chunk c, low nibbles are sub-block 2c and high nibbles sub-block 2c+1.
    q = np.stack([qs & 0xF, qs >> 4], axis=2).reshape(-1, 8, 32)
    return k_apply(q, d, dmin, sc, mn)


def deq_q5_K(b):
    d, dmin = half_at(b, 0), half_at(b, 2)
    sc, mn = k_scales_mins(b[:, 4:16])
    qh = b[:, 16:48].astype(np.int32)                       # (nb, 32)
    qs = b[:, 48:176].reshape(-1, 4, 32).astype(np.int32)
    q = np.stack([qs & 0xF, qs >> 4], axis=2).reshape(-1, 8, 32)
    # Sub-block s takes its 5th bit from bit s of qh[l].
    high = (qh[:, None, :] >> np.arange(8)[None, :, None]) & 1
    return k_apply(q + 16 * high, d, dmin, sc, mn)


def deq_q6_K(b):
    ql = b[:, 0:128].astype(np.int32)
    qh = b[:, 128:192].astype(np.int32)
    sc = np.ascontiguousarray(b[:, 192:208]).view(np.int8).astype(F32)  # 16 scales
    d = half_at(b, 208)
    out = []
    for h in range(2):  # two halves of 128 elements
        lo = ql[:, 64 * h:64 * h + 64]
        hi = qh[:, 32 * h:32 * h + 32]
        q = np.concatenate([
            (lo[:, 0:32] & 0xF) | (((hi >> 0) & 3) << 4),    # elements 0..31
            (lo[:, 32:64] & 0xF) | (((hi >> 2) & 3) << 4),   # 32..63
            (lo[:, 0:32] >> 4) | (((hi >> 4) & 3) << 4),     # 64..95
            (lo[:, 32:64] >> 4) | (((hi >> 6) & 3) << 4),    # 96..127
        ], axis=1) - 32
        scale = col(d) * sc[:, 8 * h:8 * h + 8]               # one per 16 elements
        out.append(np.repeat(scale, 16, axis=1) * q.astype(F32))
    return np.concatenate(out, axis=1)


# ---- random blocks ------------------------------------------------------------------------

def make_blocks(rng, name, n_blocks):
    _, block_elems, block_bytes = TYPES[name]
    b = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    if name in ("q4_0", "q5_0", "q8_0"):
        set_half(b, 0, sane_halves(rng, n_blocks, 1e-4, 4.0))
    elif name in ("q4_1", "q5_1", "q4_K", "q5_K"):
        set_half(b, 0, sane_halves(rng, n_blocks, 1e-4, 4.0))
        set_half(b, 2, sane_halves(rng, n_blocks, 1e-4, 4.0))
    elif name == "q6_K":
        set_half(b, 208, sane_halves(rng, n_blocks, 1e-5, 0.1))
    return b


DEQUANTIZE = {
    "f16": lambda b: deq_f16(b.reshape(-1)),
    "bf16": lambda b: deq_bf16(b.reshape(-1)),
    "q4_0": deq_q4_0, "q4_1": deq_q4_1, "q5_0": deq_q5_0, "q5_1": deq_q5_1, "q8_0": deq_q8_0,
    "q4_K": deq_q4_K, "q5_K": deq_q5_K, "q6_K": deq_q6_K,
}


# ---- GGUF writer --------------------------------------------------------------------------

ALIGNMENT = 32


def gguf_string(s):
    data = s.encode("utf-8")
    return struct.pack("<Q", len(data)) + data


def write_gguf(path, metadata, tensors):
    """metadata: [(key, str)]; tensors: [(name, type_id, [dims], bytes)]."""
    header = bytearray(b"GGUF")
    header += struct.pack("<IQQ", 3, len(tensors), len(metadata))
    for key, value in metadata:
        header += gguf_string(key) + struct.pack("<I", 8) + gguf_string(value)
    offset = 0
    layout = []
    for name, type_id, dims, data in tensors:
        header += gguf_string(name) + struct.pack("<I", len(dims))
        header += struct.pack("<%dQ" % len(dims), *dims)
        header += struct.pack("<IQ", type_id, offset)
        layout.append((offset, data))
        offset += (len(data) + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT
    header += b"\0" * (-len(header) % ALIGNMENT)
    body = bytearray(offset)
    for start, data in layout:
        body[start:start + len(data)] = data
    with open(path, "wb") as f:
        f.write(bytes(header) + bytes(body))


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: make_dequant_cases.py OUT.gguf [SEED]")
    rng = np.random.default_rng(int(sys.argv[2]) if len(sys.argv) == 3 else 20240607)
    tensors = []
    for name, (type_id, block_elems, _) in TYPES.items():
        n_blocks = ROW * ROWS // block_elems
        blocks = make_blocks(rng, name, n_blocks)
        expected = DEQUANTIZE[name](blocks).astype(F32).reshape(-1)
        assert expected.dtype == F32 and expected.size == ROW * ROWS, name
        tensors.append((name, type_id, [ROW, ROWS], blocks.tobytes()))
        tensors.append((name + ".expected", 0, [ROW, ROWS], expected.astype("<f4").tobytes()))
    write_gguf(sys.argv[1], [("general.name", "skiff dequantization cases")], tensors)


if __name__ == "__main__":
    main()

// Internals of matmul: the per-path kernels and the input layouts they read. Only the
// kernels/ files and their tests include this.
//
// A kernel computes rows [r0, r1) of y = x W^T for T positions from an input prepared once
// per call in the layout it asks for. Each output element is one dot product computed by a
// fixed sequence of operations (the kernel may interleave several rows and positions in
// registers, never change an element's own sequence): that is what makes results independent
// of T and of the thread count.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "tensor/tensor.h"

namespace skiff::kernels {

enum class InputFormat : int {
  F32 = 0,      // the floats themselves
  Q8 = 1,       // per position: nb floats (block scales) then cols int8 (natural order)
  Q8Pairs = 2,  // AVX-512 layout for Q8_0 weights: Q8Pair per two blocks, natural order
  Q8PairsNibble = 3,  // AVX-512 layout for Q4_0 weights: Q8Pair with nibble order (below)
  Q8K = 4,            // K-quant weights: Q8KBlock per 256 inputs, natural order
  Q8KNibble = 5,      // AVX-512 layout for Q4_K weights: Q8KBlock in Q4_K's nibble order
  Q8Blocks = 6,       // packed Q4_0 / Q8_0 weights (kernels/repack.h): a Q8Block per 32 inputs
  BF16 = 7,           // AVX-512 BF16 weights: the floats rounded to bf16 (round to nearest even)
  F32Tiles = 8,       // packed F32 / F16 weights: the floats of each position tile interleaved (below)
  BF16Tiles = 9,      // packed BF16 weights: F32Tiles of bf16 pairs (below)
};
constexpr int kInputFormats = 10;
// The formats of the packed-columns kernels, laid out by position tiles.
constexpr bool tiled_input(InputFormat f) { return f == InputFormat::F32Tiles || f == InputFormat::BF16Tiles; }

// F32Tiles: T positions cut into near-equal tiles of at most kF32TilePositions (13 -> 7 + 6),
// the tile of positions [t0, t0 + c) stored from float t0 * Kp as [Kp][c] (column k of its c
// positions together), zero from cols to Kp = cols rounded up to 64. A kernel that broadcasts
// one input per multiply-add then reads the c inputs of a column from one cache line, instead
// of from c rows whose equal strides can map them all to one L1 set. A lone position's layout
// is its floats padded with zeros (what prepare_input writes).
constexpr int64_t kF32TilePositions = 12;
struct PositionTile {
  int64_t t0 = 0, c = 0;
};
inline int64_t position_tiles(int64_t T) { return (T + kF32TilePositions - 1) / kF32TilePositions; }
// Tile i of position_tiles(T): the first T % n tiles get one position more.
inline PositionTile position_tile(int64_t T, int64_t i) {
  const int64_t n = position_tiles(T), base = T / n, extra = T % n;
  return {i * base + (i < extra ? i : extra), base + (i < extra ? 1 : 0)};
}
inline int64_t padded_cols_64(int64_t cols) { return (cols + 63) / 64 * 64; }
// Writes positions [t_begin, t_end) of x (T rows of cols floats) into the F32Tiles layout at out.
void prepare_input_tiles(const float* x, int64_t cols, int64_t T, int64_t t_begin, int64_t t_end, float* out);
// BF16Tiles: the same with the inputs rounded to bf16 (round_to_bf16) in pairs: the tile of
// [t0, t0 + c) from 32-bit word t0 * Kp / 2 as [Kp / 2][c], word (p, i) = column 2p of
// position t0 + i in its low half and column 2p + 1 in its high half.
void prepare_input_tiles_bf16(const float* x, int64_t cols, int64_t T, int64_t t_begin, int64_t t_end,
                              uint32_t* out);

// Two blocks of 32 quantized inputs for the AVX-512 integer kernels. `corr` holds, per
// 32-bit lane (4 bytes of x), -bias * (sum of those 4 bytes): vpdpbusd multiplies unsigned
// weight bytes that carry a +bias (Q8_0: w+128; Q4_0: the raw nibble, w+8), and starting the
// accumulator at corr cancels the bias exactly in integers. `d` is each lane's block scale.
// Nibble order (Q4_0): bytes [x0[0..15], x1[0..15], x0[16..31], x1[16..31]], matching the
// weights' low nibbles then high nibbles of the two blocks.
struct Q8Pair {
  int8_t x[64];
  int32_t corr[16];
  float d[16];
};
static_assert(sizeof(Q8Pair) == 192);

// 32 inputs quantized with one scale (as Q8_0) for the packed kernels, which broadcast 4 bytes
// of x at a time against 16 rows' unsigned weight bytes: starting the sum at -bias * sum
// cancels the weights' offset (Q4_0 nibbles: 8; Q8_0 stored as w + 128) in integers.
struct Q8Block {
  int8_t x[32];
  float d;
  int32_t sum;
};
static_assert(sizeof(Q8Block) == 40);

// 256 inputs quantized with one scale (amax/127, as llama.cpp's Q8_K), for the K-quant
// weights' super-blocks of 256. bsum[g] is the sum of the 16 inputs g*16 .. g*16+15 (natural
// order): Q4_K / Q5_K subtract their sub-block minimums and Q6_K its offset of 32 through
// them. Nibble order (Q4_K, Q5_K on AVX-512): the 32-input groups stored as 0, 2, 1, 3, 4, 6,
// 5, 7, matching the low then high nibbles of each 64 bytes of their weights.
struct Q8KBlock {
  int8_t q[256];
  int16_t bsum[16];
  float d;
  uint8_t pad[28];
};
static_assert(sizeof(Q8KBlock) == 320);

// Which natural 32-group goes to slot k (0..7) of a Q8KBlock in nibble order (0, 2, 1, 3 per 128).
constexpr int q8k_nibble_group(int k) { return (k & 3) == 1 ? k + 1 : (k & 3) == 2 ? k - 1 : k; }

// The 12 bytes of Q4_K / Q5_K 6-bit scales and minimums (at block offset 4) as 16 bytes:
// scales 0..7, then minimums 0..7. The upper four of each keep their top two bits in the
// first eight bytes.
inline void unpack_q4_k_scales(const uint8_t* s, uint8_t out[16]) {
  uint32_t w[3];
  std::memcpy(w, s, 12);
  const uint32_t words[4] = {w[0] & 0x3F3F3F3Fu, (w[2] & 0x0F0F0F0Fu) | ((w[0] >> 6) & 0x03030303u) << 4,
                             w[1] & 0x3F3F3F3Fu, ((w[2] >> 4) & 0x0F0F0F0Fu) | ((w[1] >> 6) & 0x03030303u) << 4};
  std::memcpy(out, words, 16);
}

// Decode streams weights from DRAM, and a row tile reads R rows side by side. Each row is
// a short stream (1152 bytes for a Q4_0 row of 2048), too short for the hardware
// prefetchers to learn, so decode read only 15 GB/s per core from DRAM. Instead each step
// of a tile prefetches its share of the *next* row tile, whose bytes are contiguous, in
// address order: one tile of lead hides DRAM latency (AVX-512, Q4_0 weights from DRAM,
// 2 threads: 27 -> 45-55 GB/s; reference model tg64 53 -> 77-92 t/s).
// The lines go to L2 (prefetcht1), not L1: an 8-row tile of F16 rows of 2048 is 32 KiB, all
// of L1, so fetching the next one into L1 evicted the current tile's lines before use
// (skiff_microbench BM_MatmulDram 131072 x 2048, 2 threads, same run: F16 23.6-25.2 ->
// 32.9-34.9 GB/s, BF16 24.6-26.2 -> 31.4-31.7, row-major Q8_0 20.2 -> 36.8; Q4_0 no worse).
struct TileAhead {
  const char* base = nullptr;  // first byte of the rows to prefetch
  int64_t next = 0;            // offset of the next line to prefetch
  int64_t end = 0;             // bytes to prefetch
  int lines = 0;               // lines per step
  void step() {
    for (int k = 0; k < lines; ++k, next += 64)
      if (next < end) __builtin_prefetch(base + next, 0, 2);
  }
};

// A plan that prefetches rows [first, first + n) of w (clamped to the matrix) over `steps`
// calls of step().
inline TileAhead rows_ahead(const TensorView& w, int64_t first, int64_t n, int64_t steps) {
  TileAhead a;
  if (first >= w.rows || n <= 0 || steps <= 0) return a;
  const int64_t bytes = static_cast<int64_t>(w.row_stride) * n;
  const int64_t left = static_cast<int64_t>(w.row_stride) * (w.rows - first);
  a.base = reinterpret_cast<const char*>(w.row(first));
  a.end = bytes < left ? bytes : left;
  a.lines = static_cast<int>((bytes + 64 * steps - 1) / (64 * steps));
  return a;
}

using RunFn = void (*)(const TensorView& w, int64_t r0, int64_t r1, const uint8_t* in,
                       size_t in_stride, int64_t T, float* y, int64_t y_stride);

struct MatmulKernel {
  InputFormat input = InputFormat::F32;
  RunFn run = nullptr;  // nullptr: no kernel for this type on this path
};

MatmulKernel matmul_kernel_scalar(DType type);
MatmulKernel matmul_kernel_avx2(DType type);
MatmulKernel matmul_kernel_avx512(DType type);
// Kernels for weights packed by kernels/repack.h (TensorView::packed); {} when none.
MatmulKernel matmul_kernel_packed_avx512(DType type);
MatmulKernel matmul_kernel_packed_columns_avx512(DType type);

// Any type on any path: dequantizes each weight row once, then dot_f32 with every position.
void run_dequantize_dot(const TensorView& w, int64_t r0, int64_t r1, const uint8_t* in,
                        size_t in_stride, int64_t T, float* y, int64_t y_stride);

// Bytes per position of an input in format f, and the preparation of one position.
// prepare_input uses the active CPU path's version; every version writes the same bytes.
size_t input_stride(InputFormat f, int64_t cols);
void prepare_input(InputFormat f, const float* x, int64_t cols, uint8_t* out);
void prepare_input_scalar(InputFormat f, const float* x, int64_t cols, uint8_t* out);
bool prepare_input_avx512(InputFormat f, const float* x, int64_t cols, uint8_t* out);  // false: not this format

// A float rounded to bf16 as vcvtneps2bf16 does: to nearest even, denormals to signed zero,
// NaN kept a quiet NaN.
inline uint16_t round_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7F800000u) == 0) return static_cast<uint16_t>((u >> 16) & 0x8000u);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

// The 8-bit quantization of inputs (one scale per `block` values, amax/127, round to nearest
// even): the same on every path, so all paths see the same integers.
void quantize_input_q8(const float* x, int64_t n, int8_t* q, float* d, int64_t block = 32);

// 12 independent chains of `steps` 512-bit vfmadd (or vdpbf16ps) each: the arithmetic peak
// the prefill tiles are measured against (AVX-512, and AVX512-BF16 for bf16, only).
float multiply_add_chains_avx512(int64_t steps, bool bf16);

// Values per input scale of format f (0: not quantized).
int64_t input_block(InputFormat f);

}  // namespace skiff::kernels

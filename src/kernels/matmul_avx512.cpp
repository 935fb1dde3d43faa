// AVX-512 matmul kernels (compiled with -mavx512f/bw/vl/dq/vnni/bf16; called only when the
// CPU has them).
//
// Each kernel is a register tile of R weight rows x C positions, one 16-lane accumulator per
// output element, walked over the row in steps of 16 floats (float types) or two blocks of
// 32 (Q8_0, Q4_0). Every element gets the same operations in the same order whatever R and C
// are (the tile only interleaves independent chains), so T = 1 and T = 128 agree bit for bit.
//
// Q8_0 / Q4_0: per two blocks, vpdpbusd multiplies 64 unsigned weight bytes (Q8_0: w + 128;
// Q4_0: the nibble, w + 8) by 64 signed input bytes into 16 int32 lanes, starting from the
// input's bias correction (see Q8Pair), so each lane holds an exact partial dot product; the
// lanes are converted to float and accumulated with the two blocks' d_w * d_x.
#include "kernels/avx512_util.h"  // first: its pragmas cover this file

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/dequant.h"
#include "kernels/matmul_impl.h"

namespace skiff::kernels {
namespace {

// Software prefetch distance for weight rows (bytes ahead) when several positions share the
// rows (prefill: the rows come from L2 after the first position tile).
constexpr int kPrefetchBytes = 512;

// ---- float weights: 16 at a time as float32 ------------------------------------------------

struct F32Weights {
  static constexpr int64_t kBytes = 4;  // per element
  static __m512 load(const uint8_t* row, int64_t i, __mmask16 m) {
    return _mm512_maskz_loadu_ps(m, reinterpret_cast<const float*>(row) + i);
  }
};
struct F16Weights {
  static constexpr int64_t kBytes = 2;
  static __m512 load(const uint8_t* row, int64_t i, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, reinterpret_cast<const uint16_t*>(row) + i));
  }
};
struct BF16Weights {  // exact: bf16 is the top half of a float32
  static constexpr int64_t kBytes = 2;
  static __m512 load(const uint8_t* row, int64_t i, __mmask16 m) {
    __m256i h = _mm256_maskz_loadu_epi16(m, reinterpret_cast<const uint16_t*>(row) + i);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
};

// (One loop, the last step masked; no lambda: GCC keeps the accumulators in registers only
// when their array never escapes.)
template <class W, int R, int C>
void float_tile(const uint8_t* const* rows, const float* const* xs, int64_t cols, float* out,
                int64_t out_stride, TileAhead ahead) {
  __m512 acc[R][C];
  _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r)
    _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  for (int64_t i = 0; i < cols; i += 16) {
    const __mmask16 m = cols - i >= 16 ? __mmask16{0xFFFF} : static_cast<__mmask16>((1u << (cols - i)) - 1);
    __m512 wv[R];
    _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {
      // Prefill: one prefetch per 64-byte line, kPrefetchBytes ahead (every step for F32,
      // every second for F16/BF16); past the row's end it is harmless (no fault, a wasted
      // line). Decode prefetches through `ahead` instead.
      if (C > 1 && W::kBytes * i % 64 == 0)
        _mm_prefetch(reinterpret_cast<const char*>(rows[r]) + W::kBytes * i + kPrefetchBytes, _MM_HINT_T0);
      wv[r] = W::load(rows[r], i, m);
    }
    ahead.step();
    _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, xs[c] + i);
      _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) acc[r][c] = _mm512_fmadd_ps(wv[r], xv, acc[r][c]);
    }
  }
  _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r)
    _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) out[c * out_stride + r] = hsum512(acc[r][c]);
}

// ---- Q8_0 / Q4_0 weights: two blocks at a time as unsigned bytes ---------------------------

inline int load_u32(const uint8_t* p) {
  int v;
  std::memcpy(&v, p, 4);
  return v;
}

// Q8_0 block: fp16 d, 32 int8. Two blocks are 34 words: d0 = word 0, qs0 = words 1..16,
// d1 = word 17, qs1 = words 18..33.
struct Q8_0Weights {
  static constexpr int kBlockBytes = 34;
  static constexpr InputFormat kInput = InputFormat::Q8Pairs;
  static void unpack(const uint8_t* p, bool half, __m512i& w, __m512& d) {
    const __m512i idx = _mm512_set_epi16(33, 32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18,
                                         16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1);
    const __m512i didx = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                          17, 17, 17, 17, 17, 17, 17, 17, 0, 0, 0, 0, 0, 0, 0, 0);
    // Loads stay inside the two blocks: masked loads whose masked-off part crosses into
    // the next page are very slow on AMD when the memory is a file mapping.
    __m512i a, b;
    if (!half) {
      a = _mm512_loadu_si512(p);
      b = _mm512_zextsi128_si512(_mm_cvtsi32_si128(load_u32(p + 64)));
    } else {
      a = _mm512_maskz_loadu_epi16(0x1FFFFu, p);
      b = _mm512_setzero_si512();
    }
    w = _mm512_xor_si512(_mm512_permutex2var_epi16(a, idx, b), _mm512_set1_epi8(static_cast<char>(0x80)));
    d = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(didx, a)));
  }
};

// Q4_0 block: fp16 d, 16 bytes of nibbles (element j low nibble of byte j, element j + 16
// high nibble). Two blocks are 18 words: d0 = word 0, qs0 = words 1..8, d1 = word 9,
// qs1 = words 10..17. Unpacked to bytes [lo0, lo1, hi0, hi1] (the input's nibble order).
struct Q4_0Weights {
  static constexpr int kBlockBytes = 18;
  static constexpr InputFormat kInput = InputFormat::Q8PairsNibble;
  static void unpack(const uint8_t* p, bool half, __m512i& w, __m512& d) {
    // Words 16 and 17 (the last of qs1) come from the second source (indices 32, 33).
    const __m512i idx = _mm512_set_epi16(33, 32, 15, 14, 13, 12, 11, 10, 8, 7, 6, 5, 4, 3, 2, 1,
                                         33, 32, 15, 14, 13, 12, 11, 10, 8, 7, 6, 5, 4, 3, 2, 1);
    const __m512i shift = _mm512_set_epi16(4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
                                           0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512i didx = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                          9, 9, 9, 9, 0, 0, 0, 0, 9, 9, 9, 9, 0, 0, 0, 0);
    __m512i a, b;
    if (!half) {  // in-bounds loads only (see Q8_0Weights)
      a = _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
      b = _mm512_zextsi128_si512(_mm_cvtsi32_si128(load_u32(p + 32)));
    } else {
      a = _mm512_maskz_loadu_epi16(0x1FFu, p);
      b = _mm512_setzero_si512();
    }
    const __m512i q = _mm512_srlv_epi16(_mm512_permutex2var_epi16(a, idx, b), shift);
    w = _mm512_and_si512(q, _mm512_set1_epi8(0x0F));
    d = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(didx, a)));
  }
};


template <class W, int R, int C>
void q8_tile(const uint8_t* const* rows, const Q8Pair* const* xs, int64_t nb, float* out,
             int64_t out_stride, TileAhead ahead) {
  __m512 acc[R][C];
  _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r)
    _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  const int64_t pairs = (nb + 1) / 2;
  for (int64_t p = 0; p < pairs; ++p) {
    const bool half = 2 * p + 1 == nb;  // an odd last block
    __m512i wv[R];
    __m512 wd[R];
    _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {
      const uint8_t* at = rows[r] + p * 2 * W::kBlockBytes;
      if (C > 1) _mm_prefetch(reinterpret_cast<const char*>(at) + kPrefetchBytes, _MM_HINT_T0);
      W::unpack(at, half, wv[r], wd[r]);
    }
    ahead.step();
    _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) {
      const Q8Pair& a = xs[c][p];
      const __m512i xv = _mm512_loadu_si512(a.x);
      const __m512i corr = _mm512_loadu_si512(a.corr);
      const __m512 dx = _mm512_loadu_ps(a.d);
      _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {
        const __m512i isum = _mm512_dpbusd_epi32(corr, wv[r], xv);
        acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(wd[r], dx), acc[r][c]);
      }
    }
  }
  _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r)
    _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) out[c * out_stride + r] = hsum512(acc[r][c]);
}

// ---- tiling over rows and positions ---------------------------------------------------------

constexpr int kRows = 4;       // row tile
constexpr int kDecodeRows = 8;  // row tile when there is one position
constexpr int kPositions = 4;  // position tile (quantized weights)
constexpr int kFloatPositions = 6;  // position tile (float weights)
constexpr int kFloatRows = 4;       // row tile (float weights)

// Calls Tile<R, C> with runtime r in 1..R and c in 1..MaxC.
template <template <int, int> class Tile, int R = kRows, int MaxC = kPositions>
struct Dispatch {
  template <int C, class... Args>
  static void by_c(int c, Args&&... args) {
    if constexpr (C >= 1) {
      if (c == C) return Tile<R, C>::run(args...);
      by_c<C - 1>(c, args...);
    }
  }
  template <class... Args>
  static void call(int r, int c, Args&&... args) {
    if constexpr (R >= 1) {
      if (r == R) return by_c<MaxC>(c, args...);
      Dispatch<Tile, R - 1, MaxC>::call(r, c, args...);
    }
  }
};

template <class W>
struct FloatTile {
  template <int R, int C>
  struct T {
    static void run(const uint8_t* const* rows, const float* const* xs, int64_t cols, float* out,
                    int64_t stride, TileAhead ahead) {
      float_tile<W, R, C>(rows, xs, cols, out, stride, ahead);
    }
  };
};

template <class W>
struct Q8Tile {
  template <int R, int C>
  struct T {
    static void run(const uint8_t* const* rows, const Q8Pair* const* xs, int64_t nb, float* out,
                    int64_t stride, TileAhead ahead) {
      q8_tile<W, R, C>(rows, xs, nb, out, stride, ahead);
    }
  };
};

// Positions in tiles of kPositions (outer: their inputs stay in cache while all the rows of
// this chunk pass), rows in tiles of kRows.
template <class W, bool kQuantized>
void run_block(const TensorView& w, int64_t r0, int64_t r1, const uint8_t* in, size_t in_stride,
               int64_t T, float* y, int64_t y_stride) {
  // Float tiles take 6 positions (24 accumulators + 4 weight vectors + 1 input fit the 32
  // registers); quantized tiles also hold scales and corrections, so 4.
  // T is cut into ceil(T / P) tiles of near-equal size (8 -> 4 + 4, not 6 + 2): a small
  // leftover tile would run at nearly decode speed.
  constexpr int P = kQuantized ? kPositions : kFloatPositions;
  const int64_t n_tiles = (T + P - 1) / P;
  for (int64_t tile = 0, t0 = 0; tile < n_tiles; ++tile) {
    const int c = static_cast<int>(T / n_tiles + (tile < T % n_tiles ? 1 : 0));
    const void* xs[P];
    for (int j = 0; j < c; ++j) xs[j] = in + static_cast<size_t>(t0 + j) * in_stride;
    // One position (decode): 8 rows per tile, so more independent loads are in flight.
    const int row_tile = c == 1 ? kDecodeRows : kQuantized ? kRows : kFloatRows;
    for (int64_t r = r0; r < r1; r += row_tile) {
      const int nr = static_cast<int>(std::min<int64_t>(row_tile, r1 - r));
      const uint8_t* rows[kDecodeRows];
      for (int j = 0; j < nr; ++j) rows[j] = w.row(r + j);
      float* out = y + t0 * y_stride + r;
      if (c == 1) {
        const int64_t steps = kQuantized ? (w.cols / 32 + 1) / 2 : (w.cols + 15) / 16;
        const TileAhead ahead = rows_ahead(w, r + nr, nr, steps);
        if constexpr (kQuantized) {
          Dispatch<Q8Tile<W>::template T, kDecodeRows, 1>::call(
              nr, 1, rows, reinterpret_cast<const Q8Pair* const*>(xs), w.cols / 32, out, y_stride, ahead);
        } else {
          Dispatch<FloatTile<W>::template T, kDecodeRows, 1>::call(
              nr, 1, rows, reinterpret_cast<const float* const*>(xs), w.cols, out, y_stride, ahead);
        }
      } else if constexpr (kQuantized) {
        Dispatch<Q8Tile<W>::template T>::call(nr, c, rows, reinterpret_cast<const Q8Pair* const*>(xs),
                                              w.cols / 32, out, y_stride, TileAhead{});
      } else {
        Dispatch<FloatTile<W>::template T, kFloatRows, kFloatPositions>::call(
            nr, c, rows, reinterpret_cast<const float* const*>(xs), w.cols, out, y_stride, TileAhead{});
      }
    }
    t0 += c;
  }
}

template <class W, bool kQuantized>
void run_tiles(const TensorView& w, int64_t r0, int64_t r1, const uint8_t* in, size_t in_stride,
               int64_t T, float* y, int64_t y_stride) {
  // Rows in blocks of about 384 KiB of weights, which stay in L2 (1 MiB on Zen 4/5) while
  // every position tile passes over them. Each block rereads all T inputs, so bigger blocks
  // read them less often: 384 KiB against 128 KiB, one thread, T = 128, F16 FFN down
  // (2048 x 5632) 77 -> 91 GMAC/s, 2048 x 2048 86 -> 90 (skiff_microbench BM_MatmulPrefill).
  // A thread's rows are cut into near-equal blocks (128 rows -> 64 + 64, not 96 + 32).
  if (r1 <= r0) return;
  const int64_t most = std::max<int64_t>(kRows, (int64_t{384} << 10) / static_cast<int64_t>(w.row_stride) / kRows * kRows);
  const int64_t n_blocks = (r1 - r0 + most - 1) / most;
  const int64_t block = ((r1 - r0 + n_blocks - 1) / n_blocks + kRows - 1) / kRows * kRows;
  for (int64_t b0 = r0; b0 < r1; b0 += block) {
    run_block<W, kQuantized>(w, b0, std::min(r1, b0 + block), in, in_stride, T, y, y_stride);
  }
}

// K-quants: a few rows at a time are dequantized (exactly, see dequant.h) into a scratch
// buffer, then the float tiles run over it; each element's sequence is that of F32 weights.
void run_dequantized(const TensorView& w, int64_t r0, int64_t r1, const uint8_t* in, size_t in_stride,
                     int64_t T, float* y, int64_t y_stride) {
  constexpr int64_t kBlockRows = 16;
  thread_local std::vector<float> scratch;
  const int64_t cols = w.cols;
  if (static_cast<int64_t>(scratch.size()) < kBlockRows * cols) scratch.resize(static_cast<size_t>(kBlockRows * cols));
  for (int64_t b0 = r0; b0 < r1; b0 += kBlockRows) {
    const int64_t n = std::min(kBlockRows, r1 - b0);
    for (int64_t j = 0; j < n; ++j) dequantize_row_avx512(w.type, w.row(b0 + j), scratch.data() + j * cols, cols);
    run_block<F32Weights, false>(f32_view(scratch.data(), n, cols), 0, n, in, in_stride, T, y + b0, y_stride);
  }
}

}  // namespace

MatmulKernel matmul_kernel_avx512(DType type) {
  switch (type) {
    case DType::F32: return {InputFormat::F32, run_tiles<F32Weights, false>};
    case DType::F16: return {InputFormat::F32, run_tiles<F16Weights, false>};
    case DType::BF16: return {InputFormat::F32, run_tiles<BF16Weights, false>};
    case DType::Q8_0: return {Q8_0Weights::kInput, run_tiles<Q8_0Weights, true>};
    case DType::Q4_0: return {Q4_0Weights::kInput, run_tiles<Q4_0Weights, true>};
    case DType::Q4_K:
    case DType::Q6_K: return {InputFormat::F32, run_dequantized};
    default: return {};
  }
}

}  // namespace skiff::kernels

// AVX2 + FMA + F16C matmul kernels (called only when the CPU has them). The same register
// tiling as the AVX-512 kernels (see matmul_avx512.cpp), 8 lanes wide, 2 rows x 2 positions.
// Q8_0 / Q4_0 use llama.cpp's sign trick: |w| (unsigned) times x carrying w's sign, with
// vpmaddubsw + vpmaddwd, which never saturates since |w| <= 128 and |x| <= 127.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/matmul_impl.h"

namespace skiff::kernels {
namespace {

inline float hsum(__m256 v) {
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_movehdup_ps(q));
  return _mm_cvtss_f32(q);
}

inline __m256i tail_mask(int64_t n) {  // first n of 8 lanes
  alignas(32) static const int32_t bits[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bits + 8 - n));
}

struct F32Weights {
  static __m256 load(const uint8_t* row, int64_t i) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + i);
  }
  static __m256 load_tail(const uint8_t* row, int64_t i, int64_t n) {
    return _mm256_maskload_ps(reinterpret_cast<const float*>(row) + i, tail_mask(n));
  }
};
struct F16Weights {
  static __m256 load(const uint8_t* row, int64_t i) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * i)));
  }
  static __m256 load_tail(const uint8_t* row, int64_t i, int64_t n) {
    uint16_t h[8] = {};
    std::memcpy(h, row + 2 * i, static_cast<size_t>(n) * 2);
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h)));
  }
};
struct BF16Weights {
  static __m256 widen(__m128i h) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  static __m256 load(const uint8_t* row, int64_t i) {
    return widen(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * i)));
  }
  static __m256 load_tail(const uint8_t* row, int64_t i, int64_t n) {
    uint16_t h[8] = {};
    std::memcpy(h, row + 2 * i, static_cast<size_t>(n) * 2);
    return widen(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h)));
  }
};

template <class W, int R, int C>
void float_tile(const uint8_t* const* rows, const float* const* xs, int64_t cols, float* out,
                int64_t out_stride, TileAhead ahead) {
  __m256 acc[R][C];
  _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r)
    _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= cols; i += 8) {
    __m256 wv[R];
    _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) wv[r] = W::load(rows[r], i);
    ahead.step();
    _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) {
      const __m256 xv = _mm256_loadu_ps(xs[c] + i);
      _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) acc[r][c] = _mm256_fmadd_ps(wv[r], xv, acc[r][c]);
    }
  }
  if (i < cols) {
    const int64_t n = cols - i;
    __m256 wv[R];
    _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) wv[r] = W::load_tail(rows[r], i, n);
    _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) {
      const __m256 xv = _mm256_maskload_ps(xs[c] + i, tail_mask(n));
      _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) acc[r][c] = _mm256_fmadd_ps(wv[r], xv, acc[r][c]);
    }
  }
  _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r)
    _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) out[c * out_stride + r] = hsum(acc[r][c]);
}

inline float half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

struct Q8_0Weights {
  static constexpr int kBlockBytes = 34;
  static __m256i load(const uint8_t* block) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 2));
  }
};
struct Q4_0Weights {
  static constexpr int kBlockBytes = 18;
  static __m256i load(const uint8_t* block) {
    const __m128i qs = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2));
    const __m256i both = _mm256_set_m128i(_mm_srli_epi16(qs, 4), qs);
    return _mm256_sub_epi8(_mm256_and_si256(both, _mm256_set1_epi8(0x0F)), _mm256_set1_epi8(8));
  }
};

// Input in InputFormat::Q8: nb scales, then the int8 values.
template <class W, int R, int C>
void q8_tile(const uint8_t* const* rows, const uint8_t* const* xs, int64_t nb, float* out,
             int64_t out_stride, TileAhead ahead) {
  __m256 acc[R][C];
  _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r)
    _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < nb; ++b) {
    __m256i aw[R], sw[R];
    float dw[R];
    _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {
      const uint8_t* block = rows[r] + b * W::kBlockBytes;
      sw[r] = W::load(block);
      aw[r] = _mm256_sign_epi8(sw[r], sw[r]);
      dw[r] = half_at(block);
    }
    ahead.step();
    _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) {
      const float dx = reinterpret_cast<const float*>(xs[c])[b];
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xs[c] + nb * 4 + b * 32));
      _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {
        const __m256i prod = _mm256_maddubs_epi16(aw[r], _mm256_sign_epi8(xv, sw[r]));
        const __m256 isum = _mm256_cvtepi32_ps(_mm256_madd_epi16(prod, ones));
        acc[r][c] = _mm256_fmadd_ps(isum, _mm256_set1_ps(dw[r] * dx), acc[r][c]);
      }
    }
  }
  _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r)
    _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) out[c * out_stride + r] = hsum(acc[r][c]);
}

constexpr int kRows = 2, kPositions = 2;

template <class W, bool kQuantized>
void run_block(const TensorView& w, int64_t r0, int64_t r1, const uint8_t* in, size_t in_stride,
               int64_t T, float* y, int64_t y_stride) {
  for (int64_t t0 = 0; t0 < T; t0 += kPositions) {
    const int c = static_cast<int>(std::min<int64_t>(kPositions, T - t0));
    const uint8_t* xs[kPositions];
    for (int j = 0; j < c; ++j) xs[j] = in + static_cast<size_t>(t0 + j) * in_stride;
    for (int64_t r = r0; r < r1; r += kRows) {
      const int nr = static_cast<int>(std::min<int64_t>(kRows, r1 - r));
      const uint8_t* rows[kRows] = {w.row(r), nr > 1 ? w.row(r + 1) : nullptr};
      float* out = y + t0 * y_stride + r;
      // Decode prefetches the next row tile (see TileAhead); prefill rereads rows from L2.
      const int64_t steps = kQuantized ? w.cols / 32 : w.cols / 8;
      const TileAhead ahead = c == 1 ? rows_ahead(w, r + nr, nr, steps) : TileAhead{};
      if constexpr (kQuantized) {
        const int64_t nb = w.cols / 32;
        if (nr == 2 && c == 2) q8_tile<W, 2, 2>(rows, xs, nb, out, y_stride, ahead);
        else if (nr == 2) q8_tile<W, 2, 1>(rows, xs, nb, out, y_stride, ahead);
        else if (c == 2) q8_tile<W, 1, 2>(rows, xs, nb, out, y_stride, ahead);
        else q8_tile<W, 1, 1>(rows, xs, nb, out, y_stride, ahead);
      } else {
        const float* fx[kPositions] = {reinterpret_cast<const float*>(xs[0]),
                                       c > 1 ? reinterpret_cast<const float*>(xs[1]) : nullptr};
        if (nr == 2 && c == 2) float_tile<W, 2, 2>(rows, fx, w.cols, out, y_stride, ahead);
        else if (nr == 2) float_tile<W, 2, 1>(rows, fx, w.cols, out, y_stride, ahead);
        else if (c == 2) float_tile<W, 1, 2>(rows, fx, w.cols, out, y_stride, ahead);
        else float_tile<W, 1, 1>(rows, fx, w.cols, out, y_stride, ahead);
      }
    }
  }
}

template <class W, bool kQuantized>
void run_tiles(const TensorView& w, int64_t r0, int64_t r1, const uint8_t* in, size_t in_stride,
               int64_t T, float* y, int64_t y_stride) {
  // Rows in blocks of about 128 KiB of weights, which stay in L2 while every position
  // tile passes over them.
  const int64_t block = std::max<int64_t>(kRows, (int64_t{128} << 10) / static_cast<int64_t>(w.row_stride) / kRows * kRows);
  for (int64_t b0 = r0; b0 < r1; b0 += block) {
    run_block<W, kQuantized>(w, b0, std::min(r1, b0 + block), in, in_stride, T, y, y_stride);
  }
}

}  // namespace

MatmulKernel matmul_kernel_avx2(DType type) {
  switch (type) {
    case DType::F32: return {InputFormat::F32, run_tiles<F32Weights, false>};
    case DType::F16: return {InputFormat::F32, run_tiles<F16Weights, false>};
    case DType::BF16: return {InputFormat::F32, run_tiles<BF16Weights, false>};
    case DType::Q8_0: return {InputFormat::Q8, run_tiles<Q8_0Weights, true>};
    case DType::Q4_0: return {InputFormat::Q8, run_tiles<Q4_0Weights, true>};
    default: return {};
  }
}

}  // namespace skiff::kernels

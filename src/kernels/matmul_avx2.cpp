// AVX2 + FMA + F16C matmul kernels (called only when the CPU has them). The same register
// tiling as the AVX-512 kernels (see matmul_avx512.cpp), 8 lanes wide, 2 rows x 2 positions.
// Q8_0 / Q4_0 use llama.cpp's sign trick: |w| (unsigned) times x carrying w's sign, with
// vpmaddubsw + vpmaddwd, which never saturates since |w| <= 128 and |x| <= 127. K-quant
// weights are unsigned already (their offsets go through the inputs' 16-sums).
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/avx2_util.h"
#include "kernels/matmul_impl.h"

namespace skiff::kernels {
namespace {

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
    _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) out[c * out_stride + r] = hsum256(acc[r][c]);
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
    _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) out[c * out_stride + r] = hsum256(acc[r][c]);
}

// ---- Q4_K / Q5_K / Q6_K: a super-block of 256 against Q8KBlock inputs (natural order) ----
// Per 32 weights, vpmaddubsw (unsigned weights 0..63 times signed inputs: pair sums of at
// most 2 * 63 * 127, no saturation) and vpmaddwd by the 32's scales into 32-bit lanes, exact
// until converted to float once per super-block (layouts in matmul_scalar.cpp).

inline __m256i nibbles(__m256i v, bool high) {
  return _mm256_and_si256(high ? _mm256_srli_epi16(v, 4) : v, _mm256_set1_epi8(0x0F));
}
inline __m256i load256(const void* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

// Q5_K (kFifthBit): bit j of qh[l] (32 bytes before the nibbles) is the fifth bit of weight
// l of sub-block j.
template <bool kFifthBit>
struct Q4_KWeights {
  static constexpr int kBlockBytes = kFifthBit ? 176 : 144;
  static constexpr int kNibbles = kFifthBit ? 48 : 16;  // offset of the nibbles
  struct Header {
    uint8_t sc[16];  // scales 0..7, minimums 0..7
    __m256i mins;    // 16-bit lanes 2i, 2i+1: minimum of sub-block i
    float d, dmin;
  };
  static Header header(const uint8_t* b) {
    Header h;
    unpack_q4_k_scales(b + 4, h.sc);
    const __m128i m16 = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(h.sc + 8)));
    h.mins = _mm256_set_m128i(_mm_unpackhi_epi16(m16, m16), _mm_unpacklo_epi16(m16, m16));
    h.d = half_at(b);
    h.dmin = half_at(b + 2);
    return h;
  }
  // Sub-block j: the low (j even) or high nibbles of bytes 32 * (j / 2) ...
  static __m256i weights(const uint8_t* b, int j) {
    const __m256i q = nibbles(load256(b + kNibbles + 32 * (j / 2)), j % 2 == 1);
    if constexpr (!kFifthBit) return q;
    const __m256i bit = _mm256_and_si256(_mm256_srli_epi16(load256(b + 16), j), _mm256_set1_epi8(1));
    return _mm256_or_si256(q, _mm256_slli_epi16(bit, 4));
  }
  static __m256i scales(const Header& h, int j) { return _mm256_set1_epi16(h.sc[j]); }
  static __m256i start(const Header&, const Q8KBlock&) { return _mm256_setzero_si256(); }
  static __m256 finish(const Header& h, __m256i sum, const Q8KBlock& x, __m256 acc) {
    const __m256i msum = _mm256_madd_epi16(load256(x.bsum), h.mins);
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(h.d * x.d), acc);
    return _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_set1_ps(h.dmin * x.d), acc);
  }
};

struct Q6_KWeights {
  static constexpr int kBlockBytes = 210;
  struct Header {
    const int8_t* sc;
    __m256i offset;  // 16-bit lanes: -32 * scale_g
    float d;
  };
  static Header header(const uint8_t* b) {
    Header h;
    h.sc = reinterpret_cast<const int8_t*>(b + 192);
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 192)));
    h.offset = _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(sc16, 5));
    h.d = half_at(b + 208);
    return h;
  }
  // Weights 32j .. 32j+31: in half j / 4, part k = j % 4 takes ql bytes 32 * (k & 1) .. (high
  // nibbles for k >= 2) and bits 2k, 2k+1 of qh, moved to bits 4-5.
  static __m256i weights(const uint8_t* b, int j) {
    const int half = j / 4, k = j % 4;
    const __m256i ql = nibbles(load256(b + 64 * half + 32 * (k & 1)), k >= 2);
    const __m256i qh = load256(b + 128 + 32 * half);
    const __m256i high = k == 0 ? _mm256_slli_epi16(qh, 4) : k == 1 ? _mm256_slli_epi16(qh, 2)
                       : k == 2 ? qh : _mm256_srli_epi16(qh, 2);
    return _mm256_or_si256(ql, _mm256_and_si256(high, _mm256_set1_epi8(0x30)));
  }
  static __m256i scales(const Header& h, int j) {  // groups 2j (lanes 0-7) and 2j+1 (8-15)
    return _mm256_set_m128i(_mm_set1_epi16(h.sc[2 * j + 1]), _mm_set1_epi16(h.sc[2 * j]));
  }
  static __m256i start(const Header& h, const Q8KBlock& x) { return _mm256_madd_epi16(load256(x.bsum), h.offset); }
  static __m256 finish(const Header& h, __m256i sum, const Q8KBlock& x, __m256 acc) {
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(h.d * x.d), acc);
  }
};

template <class W, int R, int C>
void kquant_tile(const uint8_t* const* rows, const uint8_t* const* xs, int64_t cols, float* out,
                 int64_t out_stride, TileAhead ahead) {
  const int64_t nsb = cols / 256;
  __m256 acc[R][C];
  _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r)
    _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nsb; ++b) {
    _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {
      const uint8_t* at = rows[r] + b * W::kBlockBytes;
      const typename W::Header h = W::header(at);
      const Q8KBlock* x[C];
      __m256i sum[C];
      _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) {
        x[c] = reinterpret_cast<const Q8KBlock*>(xs[c]) + b;
        sum[c] = W::start(h, *x[c]);
      }
      _Pragma("GCC unroll 8") for (int j = 0; j < 8; ++j) {
        const __m256i q = W::weights(at, j), sc = W::scales(h, j);
        _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) {
          const __m256i pairs = _mm256_maddubs_epi16(q, load256(x[c]->q + 32 * j));
          sum[c] = _mm256_add_epi32(sum[c], _mm256_madd_epi16(pairs, sc));
        }
      }
      _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) acc[r][c] = W::finish(h, sum[c], *x[c], acc[r][c]);
    }
    ahead.step();
  }
  _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r)
    _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) out[c * out_stride + r] = hsum256(acc[r][c]);
}

constexpr int kRows = 2, kPositions = 2;

enum class Kind { Float, Q8, KQuant };

template <class W, Kind K, int R, int C>
void tile(const uint8_t* const* rows, const uint8_t* const* xs, int64_t cols, float* out, int64_t stride,
          TileAhead ahead) {
  if constexpr (K == Kind::Float) {
    const float* fx[C];
    for (int c = 0; c < C; ++c) fx[c] = reinterpret_cast<const float*>(xs[c]);
    float_tile<W, R, C>(rows, fx, cols, out, stride, ahead);
  } else if constexpr (K == Kind::Q8) {
    q8_tile<W, R, C>(rows, xs, cols / 32, out, stride, ahead);
  } else {
    kquant_tile<W, R, C>(rows, xs, cols, out, stride, ahead);
  }
}

template <class W, Kind K>
void run_block(const TensorView& w, int64_t r0, int64_t r1, const uint8_t* in, size_t in_stride,
               int64_t T, float* y, int64_t y_stride) {
  // Decode prefetches the next row tile (see TileAhead) in one step per 8 floats, block of
  // 32 or super-block of 256; prefill rereads rows from L2.
  const int64_t steps = K == Kind::Float ? w.cols / 8 : K == Kind::Q8 ? w.cols / 32 : w.cols / 256;
  for (int64_t t0 = 0; t0 < T; t0 += kPositions) {
    const int c = static_cast<int>(std::min<int64_t>(kPositions, T - t0));
    const uint8_t* xs[kPositions];
    for (int j = 0; j < c; ++j) xs[j] = in + static_cast<size_t>(t0 + j) * in_stride;
    for (int64_t r = r0; r < r1; r += kRows) {
      const int nr = static_cast<int>(std::min<int64_t>(kRows, r1 - r));
      const uint8_t* rows[kRows] = {w.row(r), nr > 1 ? w.row(r + 1) : nullptr};
      float* out = y + t0 * y_stride + r;
      const TileAhead ahead = c == 1 ? rows_ahead(w, r + nr, nr, steps) : TileAhead{};
      if (nr == 2 && c == 2) tile<W, K, 2, 2>(rows, xs, w.cols, out, y_stride, ahead);
      else if (nr == 2) tile<W, K, 2, 1>(rows, xs, w.cols, out, y_stride, ahead);
      else if (c == 2) tile<W, K, 1, 2>(rows, xs, w.cols, out, y_stride, ahead);
      else tile<W, K, 1, 1>(rows, xs, w.cols, out, y_stride, ahead);
    }
  }
}

template <class W, Kind K>
void run_tiles(const TensorView& w, int64_t r0, int64_t r1, const uint8_t* in, size_t in_stride,
               int64_t T, float* y, int64_t y_stride) {
  // Rows in blocks of about 128 KiB of weights, which stay in L2 while every position
  // tile passes over them.
  const int64_t block = std::max<int64_t>(kRows, (int64_t{128} << 10) / static_cast<int64_t>(w.row_stride) / kRows * kRows);
  for (int64_t b0 = r0; b0 < r1; b0 += block) {
    run_block<W, K>(w, b0, std::min(r1, b0 + block), in, in_stride, T, y, y_stride);
  }
}

}  // namespace

MatmulKernel matmul_kernel_avx2(DType type) {
  switch (type) {
    case DType::F32: return {InputFormat::F32, run_tiles<F32Weights, Kind::Float>};
    case DType::F16: return {InputFormat::F32, run_tiles<F16Weights, Kind::Float>};
    case DType::BF16: return {InputFormat::F32, run_tiles<BF16Weights, Kind::Float>};
    case DType::Q8_0: return {InputFormat::Q8, run_tiles<Q8_0Weights, Kind::Q8>};
    case DType::Q4_0: return {InputFormat::Q8, run_tiles<Q4_0Weights, Kind::Q8>};
    case DType::Q4_K: return {InputFormat::Q8K, run_tiles<Q4_KWeights<false>, Kind::KQuant>};
    case DType::Q5_K: return {InputFormat::Q8K, run_tiles<Q4_KWeights<true>, Kind::KQuant>};
    case DType::Q6_K: return {InputFormat::Q8K, run_tiles<Q6_KWeights, Kind::KQuant>};
    default: return {};
  }
}

}  // namespace skiff::kernels

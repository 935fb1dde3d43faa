// AVX-512 matmul kernels (compiled with -mavx512f/bw/vl/dq/vnni/bf16; called only when the
// CPU has them).
//
// Each kernel is a register tile of R weight rows x C positions, one 16-lane accumulator per
// output element, walked over the row in steps of 16 floats (float types), two blocks of
// 32 (Q8_0, Q4_0) or a super-block of 256 (Q4_K, Q5_K, Q6_K). Every element gets the same operations in the same order whatever R and C
// are (the tile only interleaves independent chains), so T = 1 and T = 128 agree bit for bit.
//
// Q8_0 / Q4_0: per two blocks, vpdpbusd multiplies 64 unsigned weight bytes (Q8_0: w + 128;
// Q4_0: the nibble, w + 8) by 64 signed input bytes into 16 int32 lanes, starting from the
// input's bias correction (see Q8Pair), so each lane holds an exact partial dot product; the
// lanes are converted to float and accumulated with the two blocks' d_w * d_x.
#include "kernels/avx512_util.h"  // first: its pragmas cover this file

#include <algorithm>
#include <cstring>

#include "kernels/cpu.h"
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

// One step of 16 columns at i, loads masked by m. (The accumulators stay in registers because
// the step is inlined and their array never escapes.)
template <class W, int R, int C, bool kPrefetch>
__attribute__((always_inline)) inline void float_step(const uint8_t* const* rows, const float* const* xs, int64_t i,
                                                      __mmask16 m, __m512 (&acc)[R][C]) {
  __m512 wv[R];
  _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {
    // Prefill: one prefetch per 64-byte line, kPrefetchBytes ahead (every step for F32,
    // every second for F16/BF16); past the row's end it is harmless (no fault, a wasted
    // line). Decode prefetches through `ahead` instead.
    if (kPrefetch && W::kBytes * i % 64 == 0)
      _mm_prefetch(reinterpret_cast<const char*>(rows[r]) + W::kBytes * i + kPrefetchBytes, _MM_HINT_T0);
    wv[r] = W::load(rows[r], i, m);
  }
  _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) {
    const __m512 xv = _mm512_maskz_loadu_ps(m, xs[c] + i);
    _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) acc[r][c] = _mm512_fmadd_ps(wv[r], xv, acc[r][c]);
  }
}

// Whole steps unmasked, then the row's tail masked (the same products in the same order).
template <class W, int R, int C>
void float_tile(const uint8_t* const* rows, const float* const* xs, int64_t cols, float* out,
                int64_t out_stride, TileAhead ahead) {
  __m512 acc[R][C];
  _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r)
    _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  if (C == 1 || ahead.lines > 0) {
    // Rows read once from DRAM (decode, a verification's one position tile): every step
    // masked, the next rows prefetched between the loads and the FMAs. (The prefill loop
    // below measured 0.78x at one position and 0.76-0.81x for bf16 at 3-5 from DRAM.)
    for (int64_t i = 0; i < cols; i += 16) {
      const __mmask16 m = cols - i >= 16 ? __mmask16{0xFFFF} : static_cast<__mmask16>((1u << (cols - i)) - 1);
      __m512 wv[R];
      _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {
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
  } else {
    // Prefill (rows from L2, several position tiles): whole steps unmasked, the tail masked.
    int64_t i = 0;
    for (; i + 16 <= cols; i += 16) float_step<W, R, C, true>(rows, xs, i, __mmask16{0xFFFF}, acc);
    if (i < cols) float_step<W, R, C, false>(rows, xs, i, static_cast<__mmask16>((1u << (cols - i)) - 1), acc);
  }
  _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r)
    _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) out[c * out_stride + r] = hsum512(acc[r][c]);
}

// ---- BF16 weights with BF16 inputs: vdpbf16ps, 32 products per instruction ---------------
//
// The input is rounded to bf16 once per position (InputFormat::BF16). Each vdpbf16ps adds two
// exact bf16 x bf16 products per lane to a float32 accumulator: twice the multiply-adds of an
// fmadd, and no conversion of the weights. Used for every T, so T = 1 and a verify agree bit
// for bit. The tail of a row is masked to zero in both operands.

// One step of 32 columns at i, loads masked by m.
template <int R, int C, bool kPrefetch>
__attribute__((always_inline)) inline void bf16_dot_step(const uint8_t* const* rows, const uint16_t* const* xs,
                                                         int64_t i, __mmask32 m, __m512 (&acc)[R][C]) {
  __m512i wv[R];
  _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {
    if (kPrefetch) _mm_prefetch(reinterpret_cast<const char*>(rows[r]) + 2 * i + kPrefetchBytes, _MM_HINT_T0);
    wv[r] = _mm512_maskz_loadu_epi16(m, reinterpret_cast<const uint16_t*>(rows[r]) + i);
  }
  _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) {
    const __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(m, xs[c] + i);
    _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], (__m512bh)wv[r], xv);
  }
}

template <int R, int C>
void bf16_dot_tile(const uint8_t* const* rows, const uint16_t* const* xs, int64_t cols, float* out,
                   int64_t out_stride, TileAhead ahead) {
  __m512 acc[R][C];
  _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r)
    _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  if (C == 1 || ahead.lines > 0) {
    // Rows read once from DRAM: as float_tile.
    for (int64_t i = 0; i < cols; i += 32) {
      const __mmask32 m = cols - i >= 32 ? ~__mmask32{0} : static_cast<__mmask32>((1u << (cols - i)) - 1);
      __m512i wv[R];
      _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {
        if (C > 1) _mm_prefetch(reinterpret_cast<const char*>(rows[r]) + 2 * i + kPrefetchBytes, _MM_HINT_T0);
        wv[r] = _mm512_maskz_loadu_epi16(m, reinterpret_cast<const uint16_t*>(rows[r]) + i);
      }
      ahead.step();
      _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) {
        const __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(m, xs[c] + i);
        _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], (__m512bh)wv[r], xv);
      }
    }
  } else {
    // Prefill: whole steps unmasked, the tail masked.
    int64_t i = 0;
    for (; i + 32 <= cols; i += 32) bf16_dot_step<R, C, true>(rows, xs, i, ~__mmask32{0}, acc);
    if (i < cols) bf16_dot_step<R, C, false>(rows, xs, i, static_cast<__mmask32>((1u << (cols - i)) - 1), acc);
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
void q8_tile(const uint8_t* const* rows, const Q8Pair* const* xs, int64_t cols, float* out,
             int64_t out_stride, TileAhead ahead) {
  const int64_t nb = cols / 32;
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

// ---- Q4_K / Q5_K / Q6_K weights: a super-block of 256 at a time ----------------------------
//
// Per row and super-block, the scales are unpacked once into a header; then for each 64
// weights (a chunk) the weight bytes are unpacked and, per position, vpmaddubsw multiplies
// them by the input bytes into 16-bit pair sums (at most 2 * 63 * 127: no saturation) and
// vpdpwssd multiplies those by the chunk's per-lane scales into 32-bit lanes. The lanes are
// exact integers until they are converted to float once per super-block and scaled by
// d_w * d_x. One chunk at a time keeps the registers for the accumulators.

inline __m512i lo_nibbles(__m512i v) { return _mm512_and_si512(v, _mm512_set1_epi8(0x0F)); }
inline __m512i hi_nibbles(__m512i v) { return lo_nibbles(_mm512_srli_epi16(v, 4)); }

// 16-bit lanes 0..15 hold a, 16..31 hold b.
inline __m512i halves_epi16(short a, short b) {
  return _mm512_inserti64x4(_mm512_set1_epi16(a), _mm256_set1_epi16(b), 1);
}

// Q4_K (layout in matmul_scalar.cpp): 64 bytes of nibbles hold sub-blocks [2j | 2j+2] in the
// low nibbles and [2j+1 | 2j+3] in the high ones, the input's nibble order. The sub-block
// minimums are subtracted through the input's 16-sums: sum m_j * (bsum[2j] + bsum[2j+1]).
// Q5_K (kFifthBit) adds 32 bytes of fifth bits before the nibbles: bit j of byte l for
// weight l of sub-block j.
template <bool kFifthBit>
struct Q4_KWeights {
  static constexpr int kBlockBytes = kFifthBit ? 176 : 144;
  static constexpr int kNibbles = kFifthBit ? 48 : 16;  // offset of the nibbles
  static constexpr InputFormat kInput = InputFormat::Q8KNibble;
  struct Header {
    __m512i sm;    // 16-bit lanes: scales 0..7, minimums 0..7, zeros
    __m512 d, dmin;
  };
  static Header header(const uint8_t* b) {
    alignas(16) uint8_t sm[16];
    unpack_q4_k_scales(b + 4, sm);
    const __m128i bytes = _mm_load_si128(reinterpret_cast<const __m128i*>(sm));
    const __m128 dd = _mm_cvtph_ps(_mm_cvtsi32_si128(load_u32(b)));  // d, dmin
    return {_mm512_zextsi256_si512(_mm256_cvtepu8_epi16(bytes)), _mm512_broadcastss_ps(dd),
            _mm512_broadcastss_ps(_mm_movehdup_ps(dd))};
  }
  // Chunk k: the low (k even) or high nibbles of bytes 64 * (k / 2) .., sub-blocks
  // (a, b) = (0,2) (1,3) (4,6) (5,7).
  static __m512i weights(const uint8_t* b, int k) {
    const __m512i v = _mm512_loadu_si512(b + kNibbles + 64 * (k / 2));
    const __m512i q = k % 2 == 0 ? lo_nibbles(v) : hi_nibbles(v);
    if constexpr (!kFifthBit) return q;
    const short a = static_cast<short>(k / 2 * 4 + k % 2);
    const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16)));
    const __m512i bit = _mm512_and_si512(_mm512_srlv_epi16(qh, halves_epi16(a, static_cast<short>(a + 2))),
                                         _mm512_set1_epi8(1));
    return _mm512_or_si512(q, _mm512_slli_epi16(bit, 4));
  }
  static __m512i scales(const Header& h, int k) {
    const short a = static_cast<short>(k / 2 * 4 + k % 2);
    return _mm512_permutexvar_epi16(halves_epi16(a, static_cast<short>(a + 2)), h.sm);
  }
  static __m512i start(const Header&, const Q8KBlock&) { return _mm512_setzero_si512(); }
  static __m512 finish(const Header& h, __m512i sum, const Q8KBlock& x, __m512 acc) {
    // Lanes 2i, 2i+1 <- minimum i (16-bit lane 8 + i of sm); lanes 16.. <- lane 16 (zero).
    const __m512i mins = _mm512_permutexvar_epi16(
        _mm512_set_epi64(0x0010001000100010, 0x0010001000100010, 0x0010001000100010, 0x0010001000100010,
                         0x000F000F000E000E, 0x000D000D000C000C, 0x000B000B000A000A, 0x0009000900080008), h.sm);
    const __m512i bsum = _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.bsum)));
    const __m512i msum = _mm512_dpwssd_epi32(_mm512_setzero_si512(), bsum, mins);
    const __m512 v = _mm512_fmsub_ps(_mm512_cvtepi32_ps(sum), h.d, _mm512_mul_ps(_mm512_cvtepi32_ps(msum), h.dmin));
    return _mm512_fmadd_ps(v, _mm512_set1_ps(x.d), acc);
  }
};

// Q6_K (layout in matmul_scalar.cpp), unpacked to natural order: per half of 128 weights,
// ql's 64 bytes give weights 0..63 in their low nibbles and 64..127 in their high ones, and
// the two high bits come from qh (32 bytes) shifted into bits 4..5. The offset of 32 is
// subtracted through the input's 16-sums: -32 * sum scale_g * bsum[g].
struct Q6_KWeights {
  static constexpr int kBlockBytes = 210;
  static constexpr InputFormat kInput = InputFormat::Q8K;
  struct Header {
    __m512i sc;  // 16-bit lanes 0..15: the scales (sign-extended), then zeros
    __m512 d;
  };
  static Header header(const uint8_t* b) {
    uint16_t h;
    std::memcpy(&h, b + 208, 2);
    return {_mm512_zextsi256_si512(_mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 192)))),
            _mm512_set1_ps(_cvtsh_ss(h))};
  }
  static __m512i weights(const uint8_t* b, int k) {
    // Chunk k = 2 * half + (0: low nibbles, 1: high). 16-bit shift counts: the low 256 bits
    // take qh's bits 0-1 (<< 4) or 4-5 (>> 0), the high 256 bits its bits 2-3 (<< 2) or 6-7
    // (>> 2); bits crossing into the other byte of a 16-bit lane are masked off.
    const int half = k / 2;
    const __m512i ql = _mm512_loadu_si512(b + 64 * half);
    const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 128 + 32 * half)));
    const __m512i high = k % 2 == 0 ? _mm512_sllv_epi16(qh, halves_epi16(4, 2)) : _mm512_srlv_epi16(qh, halves_epi16(0, 2));
    return _mm512_or_si512(k % 2 == 0 ? lo_nibbles(ql) : hi_nibbles(ql),
                           _mm512_and_si512(high, _mm512_set1_epi8(0x30)));
  }
  static __m512i scales(const Header& h, int k) {
    // Chunk k (weights 64k .. 64k+63): 16-bit lane i covers weights 64k + 2i, +1: scale 4k + i/8.
    const __m512i idx = _mm512_set_epi64(0x0003000300030003, 0x0003000300030003, 0x0002000200020002, 0x0002000200020002,
                                         0x0001000100010001, 0x0001000100010001, 0, 0);
    return _mm512_permutexvar_epi16(_mm512_add_epi16(idx, _mm512_set1_epi16(static_cast<short>(4 * k))), h.sc);
  }
  static __m512i start(const Header& h, const Q8KBlock& x) {
    const __m512i offset = _mm512_sub_epi16(_mm512_setzero_si512(), _mm512_slli_epi16(h.sc, 5));
    const __m512i bsum = _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.bsum)));
    return _mm512_dpwssd_epi32(_mm512_setzero_si512(), bsum, offset);
  }
  static __m512 finish(const Header& h, __m512i sum, const Q8KBlock& x, __m512 acc) {
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(h.d, _mm512_set1_ps(x.d)), acc);
  }
};

template <class W, int R, int C>
void kquant_tile(const uint8_t* const* rows, const Q8KBlock* const* xs, int64_t cols, float* out,
                 int64_t out_stride, TileAhead ahead) {
  const int64_t nsb = cols / 256;
  __m512 acc[R][C];
  _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r)
    _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nsb; ++b) {
    _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {
      const uint8_t* at = rows[r] + b * W::kBlockBytes;
      if (C > 1) {
        for (int off = 0; off < W::kBlockBytes; off += 64)
          _mm_prefetch(reinterpret_cast<const char*>(at) + kPrefetchBytes + off, _MM_HINT_T0);
      }
      const typename W::Header h = W::header(at);
      __m512i sum[C];
      _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) sum[c] = W::start(h, xs[c][b]);
      _Pragma("GCC unroll 4") for (int k = 0; k < 4; ++k) {
        const __m512i q = W::weights(at, k), sc = W::scales(h, k);
        _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) {
          const __m512i pairs = _mm512_maddubs_epi16(q, _mm512_loadu_si512(xs[c][b].q + 64 * k));
          sum[c] = _mm512_dpwssd_epi32(sum[c], pairs, sc);
        }
      }
      _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) acc[r][c] = W::finish(h, sum[c], xs[c][b], acc[r][c]);
    }
    ahead.step();
  }
  _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r)
    _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) out[c * out_stride + r] = hsum512(acc[r][c]);
}

// ---- tiling over rows and positions ---------------------------------------------------------

constexpr int kDecodeRows = 8;  // row tile when there is one position

// Calls Tiles::tile<R, C> with runtime r in 1..R and c in 1..MaxC.
template <class Tiles, int R, int MaxC>
struct Dispatch {
  template <int C, class... Args>
  static void by_c(int c, Args&&... args) {
    if constexpr (C >= 1) {
      if (c == C) return Tiles::template tile<R, C>(args...);
      by_c<C - 1>(c, args...);
    }
  }
  template <class... Args>
  static void call(int r, int c, Args&&... args) {
    if constexpr (R >= 1) {
      if (r == R) return by_c<MaxC>(c, args...);
      Dispatch<Tiles, R - 1, MaxC>::call(r, c, args...);
    }
  }
};

// A family of tiles for one weight type: the input element they read, the tile shape for
// several positions, and the columns per step of the walk along a row (the decode prefetch
// spreads over the steps). Float tiles take 6 positions (24 accumulators + 4 weight vectors
// + 1 input fit the 32 registers); quantized tiles also hold scales and corrections, so 4.
template <class W>
struct FloatTile {
  using Input = float;
  static constexpr int kRows = 4, kPositions = 6, kStepCols = 16;
  template <int R, int C, class... A> static void tile(A... a) { float_tile<W, R, C>(a...); }
};

struct Bf16DotTile {
  using Input = uint16_t;
  static constexpr int kRows = 4, kPositions = 6, kStepCols = 32;
  template <int R, int C, class... A> static void tile(A... a) { bf16_dot_tile<R, C>(a...); }
};

template <class W>
struct Q8Tile {
  using Input = Q8Pair;
  static constexpr int kRows = 4, kPositions = 4, kStepCols = 64;
  template <int R, int C, class... A> static void tile(A... a) { q8_tile<W, R, C>(a...); }
};

template <class W>
struct KQuantTile {
  using Input = Q8KBlock;
  static constexpr int kRows = 4, kPositions = 4, kStepCols = 256;
  template <int R, int C, class... A> static void tile(A... a) { kquant_tile<W, R, C>(a...); }
};

// Positions in tiles of Tiles::kPositions (outer: their inputs stay in cache while all the
// rows of this chunk pass), rows in tiles of Tiles::kRows.
template <class Tiles>
void run_block(const TensorView& w, int64_t r0, int64_t r1, const uint8_t* in, size_t in_stride,
               int64_t T, float* y, int64_t y_stride) {
  // T is cut into ceil(T / P) tiles of near-equal size (8 -> 4 + 4, not 6 + 2): a small
  // leftover tile would run at nearly decode speed.
  using Input = typename Tiles::Input;
  constexpr int P = Tiles::kPositions;
  const int64_t n_tiles = (T + P - 1) / P;
  for (int64_t tile = 0, t0 = 0; tile < n_tiles; ++tile) {
    const int c = static_cast<int>(T / n_tiles + (tile < T % n_tiles ? 1 : 0));
    const Input* xs[P];
    for (int j = 0; j < c; ++j) xs[j] = reinterpret_cast<const Input*>(in + static_cast<size_t>(t0 + j) * in_stride);
    // One position (decode): 8 rows per tile, so more independent loads are in flight.
    const int row_tile = c == 1 ? kDecodeRows : Tiles::kRows;
    for (int64_t r = r0; r < r1; r += row_tile) {
      const int nr = static_cast<int>(std::min<int64_t>(row_tile, r1 - r));
      const uint8_t* rows[kDecodeRows];
      for (int j = 0; j < nr; ++j) rows[j] = w.row(r + j);
      float* out = y + t0 * y_stride + r;
      // With one position tile (decode, and the few positions of a speculative verify or a
      // small batch) every row is read once, from DRAM: prefetch the next row tile as decode
      // does. With more, the rows come back from L2 for every further position tile.
      const int64_t steps = (w.cols + Tiles::kStepCols - 1) / Tiles::kStepCols;
      const TileAhead ahead = n_tiles == 1 ? rows_ahead(w, r + nr, nr, steps) : TileAhead{};
      if (c == 1) {
        Dispatch<Tiles, kDecodeRows, 1>::call(nr, 1, rows, xs, w.cols, out, y_stride, ahead);
      } else {
        Dispatch<Tiles, Tiles::kRows, P>::call(nr, c, rows, xs, w.cols, out, y_stride, ahead);
      }
    }
    t0 += c;
  }
}

template <class Tiles>
void run_tiles(const TensorView& w, int64_t r0, int64_t r1, const uint8_t* in, size_t in_stride,
               int64_t T, float* y, int64_t y_stride) {
  // Rows in blocks of about 384 KiB of weights, which stay in L2 (1 MiB on Zen 4/5) while
  // every position tile passes over them. Each block rereads all T inputs, so bigger blocks
  // read them less often: 384 KiB against 128 KiB, one thread, T = 128, F16 FFN down
  // (2048 x 5632) 77 -> 91 GMAC/s, 2048 x 2048 86 -> 90 (skiff_microbench BM_MatmulPrefill).
  // A thread's rows are cut into near-equal blocks (128 rows -> 64 + 64, not 96 + 32).
  if (r1 <= r0) return;
  constexpr int64_t kRows = Tiles::kRows;
  const int64_t most = std::max<int64_t>(kRows, (int64_t{384} << 10) / static_cast<int64_t>(w.row_stride) / kRows * kRows);
  const int64_t n_blocks = (r1 - r0 + most - 1) / most;
  const int64_t block = ((r1 - r0 + n_blocks - 1) / n_blocks + kRows - 1) / kRows * kRows;
  for (int64_t b0 = r0; b0 < r1; b0 += block) {
    run_block<Tiles>(w, b0, std::min(r1, b0 + block), in, in_stride, T, y, y_stride);
  }
}

}  // namespace

MatmulKernel matmul_kernel_avx512(DType type) {
  switch (type) {
    case DType::F32: return {InputFormat::F32, run_tiles<FloatTile<F32Weights>>};
    case DType::F16: return {InputFormat::F32, run_tiles<FloatTile<F16Weights>>};
    case DType::BF16:
      if (cpu_has_avx512_bf16()) return {InputFormat::BF16, run_tiles<Bf16DotTile>};
      return {InputFormat::F32, run_tiles<FloatTile<BF16Weights>>};
    case DType::Q8_0: return {Q8_0Weights::kInput, run_tiles<Q8Tile<Q8_0Weights>>};
    case DType::Q4_0: return {Q4_0Weights::kInput, run_tiles<Q8Tile<Q4_0Weights>>};
    case DType::Q4_K: return {Q4_KWeights<false>::kInput, run_tiles<KQuantTile<Q4_KWeights<false>>>};
    case DType::Q5_K: return {Q4_KWeights<true>::kInput, run_tiles<KQuantTile<Q4_KWeights<true>>>};
    case DType::Q6_K: return {Q6_KWeights::kInput, run_tiles<KQuantTile<Q6_KWeights>>};
    default: return {};
  }
}

}  // namespace skiff::kernels

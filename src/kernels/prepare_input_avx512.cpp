// AVX-512 preparation of quantized and bf16 matmul inputs: the same bytes as the scalar
// prepare_input_scalar (tests/test_matmul.cpp checks them bit for bit), about 10x faster.
// Prompt processing quantizes every matmul input, which took 8% of a Q4_0 pp128 in scalar code.
// bf16: vcvtneps2bf16 is the rounding round_to_bf16 spells out (nearest even, denormals to
// signed zero, NaN quiet).
//
// Why the bytes are equal: amax, amax / 127, 1 / scale and x * inv are the same IEEE float32
// operations; vcvtps2dq rounds to nearest even as lrint does in the default rounding mode;
// |x * inv| <= 127.0001 for finite x, and non-finite products (NaN, inf) become INT_MIN in
// vcvtps2dq and LONG_MIN in lrint, both clamped to -127. NaN inputs are skipped by the
// maximum in both (vmaxps returns its second operand, the running maximum, on NaN).
#include "kernels/avx512_util.h"  // first: its pragmas cover this file

#include <algorithm>
#include <cstring>

#include "kernels/cpu.h"
#include "kernels/matmul_impl.h"

namespace skiff::kernels {
namespace {

// Quantizes n (a multiple of 16) values with one scale into q; returns the scale.
float quantize_block(const float* x, int64_t n, int8_t* q) {
  const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
  __m512 amax = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) amax = _mm512_max_ps(_mm512_and_ps(_mm512_loadu_ps(x + i), abs_mask), amax);
  const float scale = hmax512(amax) / 127.0f;
  const __m512 inv = _mm512_set1_ps(scale != 0.0f ? 1.0f / scale : 0.0f);
  for (int64_t i = 0; i < n; i += 16) {
    __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i), inv));
    v = _mm512_max_epi32(_mm512_min_epi32(v, _mm512_set1_epi32(127)), _mm512_set1_epi32(-127));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), _mm512_cvtepi32_epi8(v));
  }
  return scale;
}

// Per 32-bit lane, -bias * (the sum of its 4 signed bytes): the Q8Pair correction.
__m512i corrections(__m512i x, int bias) {
  const __m512i sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(1), x);
  return _mm512_mullo_epi32(sums, _mm512_set1_epi32(-bias));
}

void prepare_pairs(const float* x, int64_t cols, bool nibble, Q8Pair* pairs) {
  const int64_t nb = cols / 32;
  for (int64_t p = 0; p < (nb + 1) / 2; ++p) {
    alignas(64) int8_t q[64] = {};
    float d[2] = {0.0f, 0.0f};
    for (int64_t b = 0; b < std::min<int64_t>(2, nb - 2 * p); ++b) d[b] = quantize_block(x + p * 64 + b * 32, 32, q + b * 32);
    __m512i v = _mm512_load_si512(q);
    // Nibble order: 16-byte quarters [x0 lo, x1 lo, x0 hi, x1 hi] = natural quarters 0, 2, 1, 3.
    if (nibble) v = _mm512_shuffle_i32x4(v, v, _MM_SHUFFLE(3, 1, 2, 0));
    Q8Pair& pair = pairs[p];
    _mm512_storeu_si512(pair.x, v);
    _mm512_storeu_si512(pair.corr, corrections(v, nibble ? 8 : 128));
    // Lane scales: natural, lanes 0-7 block 0; nibble, lanes 0-3 and 8-11 block 0.
    const __mmask16 second = nibble ? 0xF0F0 : 0xFF00;
    _mm512_storeu_ps(pair.d, _mm512_mask_blend_ps(second, _mm512_set1_ps(d[0]), _mm512_set1_ps(d[1])));
  }
}

void prepare_q8k(const float* x, int64_t cols, bool nibble, Q8KBlock* out) {
  for (int64_t b = 0; b < cols / 256; ++b) {
    Q8KBlock& blk = out[b];
    alignas(64) int8_t q[256];
    blk.d = quantize_block(x + b * 256, 256, q);
    for (int g = 0; g < 16; ++g) {
      const __m128i bytes = _mm_load_si128(reinterpret_cast<const __m128i*>(q + 16 * g));
      blk.bsum[g] = static_cast<int16_t>(_mm512_reduce_add_epi32(_mm512_cvtepi8_epi32(bytes)));
    }
    for (int k = 0; k < 8; ++k) std::memcpy(blk.q + k * 32, q + (nibble ? q8k_nibble_group(k) : k) * 32, 32);
    std::memset(blk.pad, 0, sizeof blk.pad);
  }
}

void prepare_blocks(const float* x, int64_t cols, Q8Block* out) {
  for (int64_t b = 0; b < cols / 32; ++b) {
    Q8Block& blk = out[b];
    blk.d = quantize_block(x + b * 32, 32, blk.x);
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk.x));
    blk.sum = _mm512_reduce_add_epi32(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(q))) +
                    _mm512_reduce_add_epi32(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(q, 1)));
  }
}

void prepare_bf16(const float* x, int64_t cols, uint16_t* out) {
  for (int64_t i = 0; i < cols; i += 16) {
    const __mmask16 m = cols - i >= 16 ? __mmask16{0xFFFF} : static_cast<__mmask16>((1u << (cols - i)) - 1);
    const __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, x + i));
    _mm256_mask_storeu_epi16(out + i, m, (__m256i)h);
  }
}

}  // namespace

bool prepare_input_avx512(InputFormat f, const float* x, int64_t cols, uint8_t* out) {
  switch (f) {
    case InputFormat::Q8Pairs:
    case InputFormat::Q8PairsNibble:
      prepare_pairs(x, cols, f == InputFormat::Q8PairsNibble, reinterpret_cast<Q8Pair*>(out));
      return true;
    case InputFormat::Q8K:
    case InputFormat::Q8KNibble:
      prepare_q8k(x, cols, f == InputFormat::Q8KNibble, reinterpret_cast<Q8KBlock*>(out));
      return true;
    case InputFormat::Q8Blocks:
      prepare_blocks(x, cols, reinterpret_cast<Q8Block*>(out));
      return true;
    case InputFormat::BF16:
      if (!cpu_has_avx512_bf16()) return false;
      prepare_bf16(x, cols, reinterpret_cast<uint16_t*>(out));
      return true;
    default: return false;
  }
}

}  // namespace skiff::kernels

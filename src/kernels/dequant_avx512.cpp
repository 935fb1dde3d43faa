// AVX-512 row dequantizers for the K-quants: the same values as the reference
// (tensor/dtype.cpp, ggml's definitions) bit for bit (same float operations, no FMA), about
// ten times faster. The matmul kernels for Q4_K / Q6_K dequantize a few rows at a time with
// these and run the float register tiles over them.
#include "kernels/avx512_util.h"  // first: its pragmas cover this file

#include <cstring>

#include "kernels/dequant.h"

namespace skiff::kernels {
namespace {

float half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

// 16 unsigned bytes -> floats, times scale, minus offset (two roundings, as the reference).
inline void store_scaled_u8(const __m128i q, float scale, float offset, float* y) {
  const __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q));
  _mm512_storeu_ps(y, _mm512_sub_ps(_mm512_mul_ps(_mm512_set1_ps(scale), v), _mm512_set1_ps(offset)));
}

inline void store_scaled_i8(const __m128i q, float scale, float* y) {
  const __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q));
  _mm512_storeu_ps(y, _mm512_mul_ps(_mm512_set1_ps(scale), v));
}

void scale_min_k4(int j, const uint8_t* q, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = q[j] & 63;
    *min = q[j + 4] & 63;
  } else {
    *scale = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *min = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

void q4_k_block(const uint8_t* b, float* y) {
  const float d = half_at(b), dmin = half_at(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* q = b + 16;
  const __m256i low = _mm256_set1_epi8(0x0F);
  for (int chunk = 0; chunk < 4; ++chunk, q += 32, y += 64) {
    uint8_t sc, m;
    scale_min_k4(2 * chunk, scales, &sc, &m);
    const float d1 = d * sc, m1 = dmin * m;
    scale_min_k4(2 * chunk + 1, scales, &sc, &m);
    const float d2 = d * sc, m2 = dmin * m;
    const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q));
    const __m256i lo = _mm256_and_si256(bytes, low);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low);
    store_scaled_u8(_mm256_castsi256_si128(lo), d1, m1, y);
    store_scaled_u8(_mm256_extracti128_si256(lo, 1), d1, m1, y + 16);
    store_scaled_u8(_mm256_castsi256_si128(hi), d2, m2, y + 32);
    store_scaled_u8(_mm256_extracti128_si256(hi, 1), d2, m2, y + 48);
  }
}

void q6_k_block(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = half_at(b + 208);
  const __m256i low = _mm256_set1_epi8(0x0F), two_bits = _mm256_set1_epi8(0x30), bias = _mm256_set1_epi8(32);
  for (int half = 0; half < 2; ++half, ql += 64, qh += 32, sc += 8, y += 128) {
    const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql));
    const __m256i l1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 32));
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qh));
    __m256i q[4];
    q[0] = _mm256_or_si256(_mm256_and_si256(l0, low), _mm256_and_si256(_mm256_slli_epi16(h, 4), two_bits));
    q[1] = _mm256_or_si256(_mm256_and_si256(l1, low), _mm256_and_si256(_mm256_slli_epi16(h, 2), two_bits));
    q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low), _mm256_and_si256(h, two_bits));
    q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low),
                           _mm256_and_si256(_mm256_srli_epi16(h, 2), two_bits));
    for (int k = 0; k < 4; ++k) {
      const __m256i s = _mm256_sub_epi8(q[k], bias);
      store_scaled_i8(_mm256_castsi256_si128(s), d * static_cast<float>(sc[2 * k]), y + 32 * k);
      store_scaled_i8(_mm256_extracti128_si256(s, 1), d * static_cast<float>(sc[2 * k + 1]), y + 32 * k + 16);
    }
  }
}

}  // namespace

bool dequantize_row_avx512(DType type, const uint8_t* src, float* dst, int64_t n) {
  switch (type) {
    case DType::Q4_K:
      for (int64_t i = 0; i < n / 256; ++i) q4_k_block(src + i * 144, dst + i * 256);
      return true;
    case DType::Q6_K:
      for (int64_t i = 0; i < n / 256; ++i) q6_k_block(src + i * 210, dst + i * 256);
      return true;
    default: return false;
  }
}

}  // namespace skiff::kernels

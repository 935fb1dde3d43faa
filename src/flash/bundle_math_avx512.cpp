// AVX-512 versions of bundle_math.h for F16 and BF16 rows (F32 rows use kernels/dot.h).
// GCC 12's conversion intrinsics start from _mm512_undefined_*(), which -Wmaybe-uninitialized
// reports inside the system header; the values are fully written before use.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "flash/bundle_math.h"

namespace skiff::flash::kernels {

namespace {

// 16 elements of a half/bfloat16 row as floats; `m` masks the tail.
inline __m512 load16(DType type, const uint8_t* row, int64_t i, __mmask16 m) {
  const __m256i raw = _mm256_maskz_loadu_epi16(m, row + 2 * i);
  if (type == DType::F16) return _mm512_cvtph_ps(raw);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));  // bf16
}

inline float hsum(__m512 v) {
  __m256 h = _mm256_add_ps(_mm512_extractf32x8_ps(v, 0), _mm512_extractf32x8_ps(v, 1));
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_movehdup_ps(q));
  return _mm_cvtss_f32(q);
}

}  // namespace

float dot_row_avx512(DType type, const uint8_t* row, const float* x, int64_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(load16(type, row, i, 0xFFFF), _mm512_loadu_ps(x + i), acc0);
    acc1 = _mm512_fmadd_ps(load16(type, row, i + 16, 0xFFFF), _mm512_loadu_ps(x + i + 16), acc1);
  }
  for (; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (n - i)) - 1);
    acc0 = _mm512_fmadd_ps(load16(type, row, i, m), _mm512_maskz_loadu_ps(m, x + i), acc0);
  }
  return hsum(_mm512_add_ps(acc0, acc1));
}

void axpy_row_avx512(DType type, float a, const uint8_t* row, float* y, int64_t n) {
  const __m512 va = _mm512_set1_ps(a);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512 r = _mm512_fmadd_ps(va, load16(type, row, i, m), _mm512_maskz_loadu_ps(m, y + i));
    _mm512_mask_storeu_ps(y + i, m, r);
  }
}

}  // namespace skiff::flash::kernels

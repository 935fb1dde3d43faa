// Helpers shared by the *_avx2.cpp kernels. Include only from those files (it needs their
// ISA flags).
#pragma once
#include <immintrin.h>

namespace skiff::kernels {

// Sum of the 8 lanes as the tree ((l[i] + l[i+4]) + (l[i+2] + l[i+6])) ..., the same in every
// AVX2 kernel.
inline float hsum256(__m256 v) {
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

}  // namespace skiff::kernels

// The AVX-512 vector exp shared by the *_avx512.cpp kernels (include only from those: it
// needs their ISA flags).
#pragma once

#include <immintrin.h>

namespace skiff::kernels {

// exp(x) = 2^k * e^r with k = round(x / ln 2) and r = x - k ln 2 in [-ln2/2, ln2/2]
// (ln 2 split in two so k ln 2 is exact), e^r by its Taylor polynomial of degree 7
// (truncation error below 2e-9 relative), and 2^k applied by vscalefps, which also gives
// inf and 0 when the result overflows or underflows. Inputs are clamped first so that
// +-inf behave (exp(-inf) = 0, exp(inf) = inf); NaN stays NaN through the arithmetic.
inline __m512 exp512(__m512 x) {
  // (vmaxps/vminps return their second operand when either is NaN: x goes second.)
  x = _mm512_min_ps(_mm512_set1_ps(100.0f), _mm512_max_ps(_mm512_set1_ps(-150.0f), x));
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, k);
}

}  // namespace skiff::kernels

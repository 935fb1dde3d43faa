// The arithmetic peak of one core (skiff_microbench BM_ArithmeticPeak), against which the
// prefill tiles are judged: 12 independent chains of 512-bit vfmadd (16 multiply-adds each)
// or vdpbf16ps (32), so neither latency nor memory limits them.
#include "kernels/avx512_util.h"  // first: its pragmas cover this file

#include "kernels/matmul_impl.h"

namespace skiff::kernels {

float multiply_add_chains_avx512(int64_t steps, bool bf16) {
  __m512 acc[12];
  _Pragma("GCC unroll 12") for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
  if (bf16) {
    const __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80);  // 1.0
    for (int64_t k = 0; k < steps; ++k) {
      _Pragma("GCC unroll 12") for (int i = 0; i < 12; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], x, x);
    }
  } else {
    const __m512 a = _mm512_set1_ps(1.0000001f), c = _mm512_set1_ps(1e-7f);
    for (int64_t k = 0; k < steps; ++k) {
      _Pragma("GCC unroll 12") for (int i = 0; i < 12; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, c);
    }
  }
  __m512 sum = acc[0];
  for (int i = 1; i < 12; ++i) sum = _mm512_add_ps(sum, acc[i]);
  return hsum512(sum);
}

}  // namespace skiff::kernels

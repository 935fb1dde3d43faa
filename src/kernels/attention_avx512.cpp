// AVX-512 attention of one query head (see attention.h). Scores are computed four positions
// at a time (independent chains), the softmax is exp512 over vectors, and the weighted sum
// of values accumulates in registers, normalized once at the end.
#include "kernels/avx512_util.h"  // first: its pragmas cover this file

#include <cmath>

#include "kernels/attention.h"

namespace skiff::kernels {
namespace {

// NCH = ceil(hd / 16) vectors per head slice; the last one masked when hd % 16 != 0.
template <int NCH>
void attend(const float* q, const float* keys, const float* values, int64_t stride, int n, int hd, float scale,
            float* scores, float* out) {
  const __mmask16 last = first_lanes(hd - 16 * (NCH - 1));
  __m512 qv[NCH];
  _Pragma("GCC unroll 16") for (int c = 0; c < NCH; ++c)
    qv[c] = _mm512_maskz_loadu_ps(c == NCH - 1 ? last : __mmask16{0xFFFF}, q + 16 * c);
  auto load = [&](const float* p, int c) {
    return c == NCH - 1 ? _mm512_maskz_loadu_ps(last, p + 16 * c) : _mm512_loadu_ps(p + 16 * c);
  };

  // Scores, four positions at a time.
  int p = 0;
  for (; p + 4 <= n; p += 4) {
    __m512 acc[4];
    _Pragma("GCC unroll 4") for (int j = 0; j < 4; ++j) acc[j] = _mm512_setzero_ps();
    _Pragma("GCC unroll 16") for (int c = 0; c < NCH; ++c)
      _Pragma("GCC unroll 4") for (int j = 0; j < 4; ++j)
        acc[j] = _mm512_fmadd_ps(qv[c], load(keys + (p + j) * stride, c), acc[j]);
    _Pragma("GCC unroll 4") for (int j = 0; j < 4; ++j) scores[p + j] = hsum512(acc[j]) * scale;
  }
  for (; p < n; ++p) {
    __m512 acc = _mm512_setzero_ps();
    _Pragma("GCC unroll 16") for (int c = 0; c < NCH; ++c) acc = _mm512_fmadd_ps(qv[c], load(keys + p * stride, c), acc);
    scores[p] = hsum512(acc) * scale;
  }

  // Softmax numerators exp(s - max) and their sum.
  __m512 mx = _mm512_set1_ps(-INFINITY);
  for (int i = 0; i < n; i += 16) mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(mx, first_lanes(n - i), scores + i));
  const __m512 m = _mm512_set1_ps(hmax512(mx));
  __m512 sum = _mm512_setzero_ps();
  for (int i = 0; i < n; i += 16) {
    const __mmask16 k = first_lanes(n - i);
    const __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, scores + i), m));
    _mm512_mask_storeu_ps(scores + i, k, e);
    sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(k, e));
  }
  const __m512 inv = _mm512_set1_ps(1.0f / hsum512(sum));

  // out = sum_p e_p v_p / sum.
  __m512 o[NCH];
  _Pragma("GCC unroll 16") for (int c = 0; c < NCH; ++c) o[c] = _mm512_setzero_ps();
  for (int i = 0; i < n; ++i) {
    const __m512 e = _mm512_set1_ps(scores[i]);
    _Pragma("GCC unroll 16") for (int c = 0; c < NCH; ++c) o[c] = _mm512_fmadd_ps(e, load(values + i * stride, c), o[c]);
  }
  _Pragma("GCC unroll 16") for (int c = 0; c < NCH; ++c)
    _mm512_mask_storeu_ps(out + 16 * c, c == NCH - 1 ? last : __mmask16{0xFFFF}, _mm512_mul_ps(o[c], inv));
}

}  // namespace

bool attend_head_avx512(const float* q, const float* keys, const float* values, int64_t stride, int n, int hd,
                        float scale, float* scores, float* out) {
  switch ((hd + 15) / 16) {
    case 1: attend<1>(q, keys, values, stride, n, hd, scale, scores, out); return true;
    case 2: attend<2>(q, keys, values, stride, n, hd, scale, scores, out); return true;
    case 3: attend<3>(q, keys, values, stride, n, hd, scale, scores, out); return true;
    case 4: attend<4>(q, keys, values, stride, n, hd, scale, scores, out); return true;
    case 5: attend<5>(q, keys, values, stride, n, hd, scale, scores, out); return true;
    case 6: attend<6>(q, keys, values, stride, n, hd, scale, scores, out); return true;
    case 7: attend<7>(q, keys, values, stride, n, hd, scale, scores, out); return true;
    case 8: attend<8>(q, keys, values, stride, n, hd, scale, scores, out); return true;
    default: return false;
  }
}

}  // namespace skiff::kernels

// AVX-512 attention (see attention.h). The query heads of one KV head are attended together
// (attend_group): each key vector is loaded once for 4 heads and their 16 dot products are
// summed across lanes together; each value vector is loaded once for up to 4 heads. One head
// alone (attend, MHA models) computes scores four positions at a time. The softmax is exp512
// over vectors, the weighted sums accumulate in registers, normalized once at the end. Keys
// and values are read through a loader per cache type (F32, F16, Q8_0) that turns 16 values
// into floats; the F32 loader is a plain load.
#include "kernels/avx512_util.h"  // first: its pragmas cover this file

#include <cmath>
#include <cstring>

#include "kernels/attention.h"

namespace skiff::kernels {
namespace {

// Loaders: row(p) is position p's head slice; load<NCH>(row, c, last) gives values
// 16c .. 16c + 15 as floats (the last of NCH chunks masked to `last`).
struct F32Rows {
  const float* data;
  int64_t stride;  // floats
  const float* row(int p) const { return data + p * stride; }
  template <int NCH>
  static __m512 load(const float* r, int c, __mmask16 last) {
    return c == NCH - 1 ? _mm512_maskz_loadu_ps(last, r + 16 * c) : _mm512_loadu_ps(r + 16 * c);
  }
};

struct F16Rows {
  const uint8_t* data;
  int64_t stride;  // bytes
  const uint16_t* row(int p) const { return reinterpret_cast<const uint16_t*>(data + p * stride); }
  template <int NCH>
  static __m512 load(const uint16_t* r, int c, __mmask16 last) {
    const __m256i h = c == NCH - 1 ? _mm256_maskz_loadu_epi16(last, r + 16 * c)
                                   : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r + 16 * c));
    return _mm512_cvtph_ps(h);
  }
};

// GGUF Q8_0: blocks of 2 bytes (F16 scale d) + 32 int8 q; value = d * q. The slice holds whole
// blocks (hd % 32 == 0), so no chunk is masked.
struct Q8Rows {
  const uint8_t* data;
  int64_t stride;  // bytes
  const uint8_t* row(int p) const { return data + p * stride; }
  template <int NCH>
  static __m512 load(const uint8_t* r, int c, __mmask16) {
    const uint8_t* block = r + (c / 2) * 34;
    uint16_t d;
    std::memcpy(&d, block, sizeof d);
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2 + (c & 1) * 16));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), _mm512_set1_ps(_cvtsh_ss(d)));
  }
};

// Sixteen dot products at once: lane j of the result is the sum of the 16 lanes of a[j].
// Every lane takes the same tree, ((e0 + e2) + (e1 + e3)) within each 128-bit quarter, then
// (q0 + q1) + (q2 + q3). (About 3 operations per score against 8 for a horizontal sum each.)
inline __m512 sum_lanes_16(__m512 (&a)[16]) {
  __m512 b[8];
  _Pragma("GCC unroll 8") for (int i = 0; i < 8; ++i)  // per quarter: x02 y02 x13 y13
    b[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
  __m512 c[4];
  _Pragma("GCC unroll 4") for (int i = 0; i < 4; ++i)  // per quarter: the quarter's sum of 4 positions
    c[i] = _mm512_add_ps(_mm512_shuffle_ps(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 d01 = _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(c[0], c[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512 d23 = _mm512_add_ps(_mm512_shuffle_f32x4(c[2], c[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(c[2], c[3], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(d01, d23, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(d01, d23, _MM_SHUFFLE(3, 1, 3, 1)));
}

// Softmax numerators exp(s - max) in place; returns 1 / their sum.
inline float softmax_numerators(float* scores, int n) {
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
  return 1.0f / hsum512(sum);
}

// One query head (MHA models; grouped heads take attend_group). NCH = ceil(hd / 16) vectors
// per head slice; the last one masked when hd % 16 != 0.
template <int NCH, class Keys, class Values>
void attend(const float* q, Keys keys, Values values, int n, int hd, float scale, float* scores, float* out) {
  const __mmask16 last = first_lanes(hd - 16 * (NCH - 1));
  __m512 qv[NCH];
  _Pragma("GCC unroll 16") for (int c = 0; c < NCH; ++c)
    qv[c] = _mm512_maskz_loadu_ps(c == NCH - 1 ? last : __mmask16{0xFFFF}, q + 16 * c);

  // Scores, four positions at a time.
  int p = 0;
  for (; p + 4 <= n; p += 4) {
    __m512 acc[4];
    _Pragma("GCC unroll 4") for (int j = 0; j < 4; ++j) acc[j] = _mm512_setzero_ps();
    _Pragma("GCC unroll 16") for (int c = 0; c < NCH; ++c)
      _Pragma("GCC unroll 4") for (int j = 0; j < 4; ++j)
        acc[j] = _mm512_fmadd_ps(qv[c], Keys::template load<NCH>(keys.row(p + j), c, last), acc[j]);
    _Pragma("GCC unroll 4") for (int j = 0; j < 4; ++j) scores[p + j] = hsum512(acc[j]) * scale;
  }
  for (; p < n; ++p) {
    __m512 acc = _mm512_setzero_ps();
    _Pragma("GCC unroll 16") for (int c = 0; c < NCH; ++c)
      acc = _mm512_fmadd_ps(qv[c], Keys::template load<NCH>(keys.row(p), c, last), acc);
    scores[p] = hsum512(acc) * scale;
  }
  const __m512 inv = _mm512_set1_ps(softmax_numerators(scores, n));

  // out = sum_p e_p v_p / sum.
  __m512 o[NCH];
  _Pragma("GCC unroll 16") for (int c = 0; c < NCH; ++c) o[c] = _mm512_setzero_ps();
  for (int i = 0; i < n; ++i) {
    const __m512 e = _mm512_set1_ps(scores[i]);
    _Pragma("GCC unroll 16") for (int c = 0; c < NCH; ++c)
      o[c] = _mm512_fmadd_ps(e, Values::template load<NCH>(values.row(i), c, last), o[c]);
  }
  _Pragma("GCC unroll 16") for (int c = 0; c < NCH; ++c)
    _mm512_mask_storeu_ps(out + 16 * c, c == NCH - 1 ? last : __mmask16{0xFFFF}, _mm512_mul_ps(o[c], inv));
}

// Scores of HG <= 4 query heads (q: their slices one after another) against 4 positions
// p..p+3 (m <= 4 of them real; p a multiple of 4), into rows of `scores` n apart: each key
// vector is loaded once for the HG heads, and the 16 dot products (head g, position p + j in
// lane 4g + j) are summed across lanes together. A score's lane depends only on its head and
// position, never on n, so a position's scores are the same in decode and in a prefill.
template <int NCH, int HG, class Keys>
__attribute__((always_inline)) inline void group_scores_4(const float* q, Keys keys, int p, int m, int n, int hd,
                                                          __mmask16 last, __m512 scale_v, float* scores) {
  __m512 acc[16];
  _Pragma("GCC unroll 16") for (int j = 0; j < 16; ++j) acc[j] = _mm512_setzero_ps();
  _Pragma("GCC unroll 16") for (int c = 0; c < NCH; ++c) {
    const __mmask16 k = c == NCH - 1 ? last : __mmask16{0xFFFF};
    __m512 qv[HG];
    _Pragma("GCC unroll 4") for (int g = 0; g < HG; ++g) qv[g] = _mm512_maskz_loadu_ps(k, q + g * hd + 16 * c);
    _Pragma("GCC unroll 4") for (int j = 0; j < 4; ++j) {
      if (j >= m) break;
      const __m512 kv = Keys::template load<NCH>(keys.row(p + j), c, last);
      _Pragma("GCC unroll 4") for (int g = 0; g < HG; ++g) acc[4 * g + j] = _mm512_fmadd_ps(qv[g], kv, acc[4 * g + j]);
    }
  }
  const __m512 r = _mm512_mul_ps(sum_lanes_16(acc), scale_v);
  const __mmask8 mk = static_cast<__mmask8>((1u << m) - 1);
  _Pragma("GCC unroll 4") for (int g = 0; g < HG; ++g) {
    float* dst = scores + static_cast<int64_t>(g) * n + p;
    const __m128 part = g == 0 ? _mm512_castps512_ps128(r) : g == 1 ? _mm512_extractf32x4_ps(r, 1)
                                                         : g == 2 ? _mm512_extractf32x4_ps(r, 2)
                                                                  : _mm512_extractf32x4_ps(r, 3);
    if (m == 4) _mm_storeu_ps(dst, part);
    else _mm_mask_storeu_ps(dst, mk, part);
  }
}

// out_g = sum_p e_g,p v_p for HG heads: each value vector is loaded once for the HG heads,
// HG x NCH independent chains (<= 16) in registers.
template <int NCH, int HG, class Values>
__attribute__((always_inline)) inline void group_values(const float* scores, Values values, int n, int hd,
                                                        __mmask16 last, const float* inv, float* out) {
  __m512 o[HG][NCH];
  _Pragma("GCC unroll 4") for (int g = 0; g < HG; ++g)
    _Pragma("GCC unroll 8") for (int c = 0; c < NCH; ++c) o[g][c] = _mm512_setzero_ps();
  for (int i = 0; i < n; ++i) {
    __m512 v[NCH];
    _Pragma("GCC unroll 8") for (int c = 0; c < NCH; ++c) v[c] = Values::template load<NCH>(values.row(i), c, last);
    _Pragma("GCC unroll 4") for (int g = 0; g < HG; ++g) {
      const __m512 e = _mm512_set1_ps(scores[static_cast<int64_t>(g) * n + i]);
      _Pragma("GCC unroll 8") for (int c = 0; c < NCH; ++c) o[g][c] = _mm512_fmadd_ps(e, v[c], o[g][c]);
    }
  }
  _Pragma("GCC unroll 4") for (int g = 0; g < HG; ++g) {
    const __m512 iv = _mm512_set1_ps(inv[g]);
    _Pragma("GCC unroll 8") for (int c = 0; c < NCH; ++c)
      _mm512_mask_storeu_ps(out + g * hd + 16 * c, c == NCH - 1 ? last : __mmask16{0xFFFF},
                            _mm512_mul_ps(o[g][c], iv));
  }
}

// attend for G > 1 query heads sharing one KV head (q and out: the heads' slices one after
// another; scores: G rows of n). Keys are read once per 4 heads and values once per HV (4, or
// 2 when hd > 64) heads, from registers; every score and output element is computed by the same operations
// whatever n is, so a position's attention is the same in decode, verification and prefill.
// (Per head, attend read each key and value vector for one fma: load-bound.)
template <int NCH, class Keys, class Values>
void attend_group(const float* q, Keys keys, Values values, int G, int n, int hd, float scale, float* scores,
                  float* out) {
  const __mmask16 last = first_lanes(hd - 16 * (NCH - 1));
  const __m512 scale_v = _mm512_set1_ps(scale);
  for (int g0 = 0; g0 < G; g0 += 4) {
    const float* qg = q + g0 * hd;
    float* sg = scores + static_cast<int64_t>(g0) * n;
    for (int p = 0; p < n; p += 4) {
      const int m = n - p < 4 ? n - p : 4;
      switch (G - g0 < 4 ? G - g0 : 4) {
        case 1: group_scores_4<NCH, 1>(qg, keys, p, m, n, hd, last, scale_v, sg); break;
        case 2: group_scores_4<NCH, 2>(qg, keys, p, m, n, hd, last, scale_v, sg); break;
        case 3: group_scores_4<NCH, 3>(qg, keys, p, m, n, hd, last, scale_v, sg); break;
        default: group_scores_4<NCH, 4>(qg, keys, p, m, n, hd, last, scale_v, sg); break;
      }
    }
  }
  constexpr int HV = NCH <= 4 ? 4 : 2;  // heads per pass over the values: <= 16 accumulators
  for (int g0 = 0; g0 < G; g0 += HV) {
    float* sg = scores + static_cast<int64_t>(g0) * n;
    const int heads = G - g0 < HV ? G - g0 : HV;
    float inv[HV];
    for (int g = 0; g < heads; ++g) inv[g] = softmax_numerators(sg + static_cast<int64_t>(g) * n, n);
    switch (heads) {
      case 1: group_values<NCH, 1>(sg, values, n, hd, last, inv, out + g0 * hd); break;
      case 2: group_values<NCH, 2>(sg, values, n, hd, last, inv, out + g0 * hd); break;
      case 3: group_values<NCH, 3>(sg, values, n, hd, last, inv, out + g0 * hd); break;
      default: group_values<NCH, HV>(sg, values, n, hd, last, inv, out + g0 * hd); break;
    }
  }
}

// One call: G query heads (1: attend, registers only; more: attend_group) over n positions.
struct Heads {
  const float* q;
  int G, n, hd;
  float scale;
  float* scores;
  float* out;
};

template <int NCH, class Keys, class Values>
void attend_heads_nch(const Heads& a, Keys keys, Values values) {
  if (a.G == 1) return attend<NCH>(a.q, keys, values, a.n, a.hd, a.scale, a.scores, a.out);
  attend_group<NCH>(a.q, keys, values, a.G, a.n, a.hd, a.scale, a.scores, a.out);
}

template <class Keys, class Values>
bool attend_any(const Heads& a, Keys keys, Values values) {
  switch ((a.hd + 15) / 16) {
    case 1: attend_heads_nch<1>(a, keys, values); return true;
    case 2: attend_heads_nch<2>(a, keys, values); return true;
    case 3: attend_heads_nch<3>(a, keys, values); return true;
    case 4: attend_heads_nch<4>(a, keys, values); return true;
    case 5: attend_heads_nch<5>(a, keys, values); return true;
    case 6: attend_heads_nch<6>(a, keys, values); return true;
    case 7: attend_heads_nch<7>(a, keys, values); return true;
    case 8: attend_heads_nch<8>(a, keys, values); return true;
    default: return false;
  }
}

template <class Keys>
bool attend_values(const Heads& a, Keys keys, KvSlice v) {
  switch (v.type) {
    case DType::F32: return attend_any(a, keys, F32Rows{reinterpret_cast<const float*>(v.data), v.stride / 4});
    case DType::F16: return attend_any(a, keys, F16Rows{v.data, v.stride});
    case DType::Q8_0: return a.hd % 32 == 0 && attend_any(a, keys, Q8Rows{v.data, v.stride});
    default: return false;
  }
}

bool attend_typed(const Heads& a, KvSlice keys, KvSlice values) {
  switch (keys.type) {
    case DType::F32:
      return attend_values(a, F32Rows{reinterpret_cast<const float*>(keys.data), keys.stride / 4}, values);
    case DType::F16: return attend_values(a, F16Rows{keys.data, keys.stride}, values);
    case DType::Q8_0: return a.hd % 32 == 0 && attend_values(a, Q8Rows{keys.data, keys.stride}, values);
    default: return false;
  }
}

}  // namespace

bool attend_head_avx512(const float* q, const float* keys, const float* values, int64_t stride, int n, int hd,
                        float scale, float* scores, float* out) {
  return attend_any(Heads{q, 1, n, hd, scale, scores, out}, F32Rows{keys, stride}, F32Rows{values, stride});
}

bool attend_head_kv_avx512(const float* q, KvSlice keys, KvSlice values, int n, int hd, float scale, float* scores,
                           float* out) {
  return attend_typed(Heads{q, 1, n, hd, scale, scores, out}, keys, values);
}

bool attend_heads_avx512(const float* q, KvSlice keys, KvSlice values, int group, int n, int hd, float scale,
                         float* scores, float* out) {
  return attend_typed(Heads{q, group, n, hd, scale, scores, out}, keys, values);
}

}  // namespace skiff::kernels

// AVX-512 attention of one query head (see attention.h). Scores are computed four positions
// at a time (independent chains), the softmax is exp512 over vectors, and the weighted sum
// of values accumulates in registers, normalized once at the end. Keys and values are read
// through a loader per cache type (F32, F16, Q8_0) that turns 16 values into floats; the F32
// loader is a plain load, so the all-F32 kernel is the same sequence of operations as before
// typed caches existed.
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

// NCH = ceil(hd / 16) vectors per head slice; the last one masked when hd % 16 != 0.
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
    _Pragma("GCC unroll 16") for (int c = 0; c < NCH; ++c)
      o[c] = _mm512_fmadd_ps(e, Values::template load<NCH>(values.row(i), c, last), o[c]);
  }
  _Pragma("GCC unroll 16") for (int c = 0; c < NCH; ++c)
    _mm512_mask_storeu_ps(out + 16 * c, c == NCH - 1 ? last : __mmask16{0xFFFF}, _mm512_mul_ps(o[c], inv));
}

template <class Keys, class Values>
bool attend_any(const float* q, Keys keys, Values values, int n, int hd, float scale, float* scores, float* out) {
  switch ((hd + 15) / 16) {
    case 1: attend<1>(q, keys, values, n, hd, scale, scores, out); return true;
    case 2: attend<2>(q, keys, values, n, hd, scale, scores, out); return true;
    case 3: attend<3>(q, keys, values, n, hd, scale, scores, out); return true;
    case 4: attend<4>(q, keys, values, n, hd, scale, scores, out); return true;
    case 5: attend<5>(q, keys, values, n, hd, scale, scores, out); return true;
    case 6: attend<6>(q, keys, values, n, hd, scale, scores, out); return true;
    case 7: attend<7>(q, keys, values, n, hd, scale, scores, out); return true;
    case 8: attend<8>(q, keys, values, n, hd, scale, scores, out); return true;
    default: return false;
  }
}

template <class Keys>
bool attend_values(const float* q, Keys keys, KvSlice v, int n, int hd, float scale, float* scores, float* out) {
  switch (v.type) {
    case DType::F32:
      return attend_any(q, keys, F32Rows{reinterpret_cast<const float*>(v.data), v.stride / 4}, n, hd, scale, scores,
                        out);
    case DType::F16: return attend_any(q, keys, F16Rows{v.data, v.stride}, n, hd, scale, scores, out);
    case DType::Q8_0:
      return hd % 32 == 0 && attend_any(q, keys, Q8Rows{v.data, v.stride}, n, hd, scale, scores, out);
    default: return false;
  }
}

}  // namespace

bool attend_head_avx512(const float* q, const float* keys, const float* values, int64_t stride, int n, int hd,
                        float scale, float* scores, float* out) {
  return attend_any(q, F32Rows{keys, stride}, F32Rows{values, stride}, n, hd, scale, scores, out);
}

bool attend_head_kv_avx512(const float* q, KvSlice keys, KvSlice values, int n, int hd, float scale, float* scores,
                           float* out) {
  switch (keys.type) {
    case DType::F32:
      return attend_values(q, F32Rows{reinterpret_cast<const float*>(keys.data), keys.stride / 4}, values, n, hd,
                           scale, scores, out);
    case DType::F16: return attend_values(q, F16Rows{keys.data, keys.stride}, values, n, hd, scale, scores, out);
    case DType::Q8_0:
      return hd % 32 == 0 && attend_values(q, Q8Rows{keys.data, keys.stride}, values, n, hd, scale, scores, out);
    default: return false;
  }
}

}  // namespace skiff::kernels

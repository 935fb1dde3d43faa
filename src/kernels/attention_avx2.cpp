// AVX2 + FMA + F16C attention of one query head over a typed KV cache (F16 or Q8_0 keys or
// values; see attention.h). Compiled with -mavx2 -mfma -mf16c, called only when the CPU has
// them. Keys and values are converted 8 at a time as they are read, instead of the scalar
// path's dequantize_row of each slice into a buffer; the softmax is the scalar one. An
// all-F32 cache is left to attend_head (it must stay bit for bit what it was).
#include <immintrin.h>

#include <cstring>

#include "kernels/attention.h"
#include "kernels/avx2_util.h"
#include "kernels/ops.h"

namespace skiff::kernels {
namespace {

// Values 8c .. 8c + 7 of the slice at `row` as floats (hd % 32 == 0 for Q8_0, % 8 for others).
template <DType T>
inline __m256 load8(const uint8_t* row, int c) {
  if constexpr (T == DType::F32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + 8 * c);
  } else if constexpr (T == DType::F16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 16 * c)));
  } else {  // Q8_0: blocks of an F16 scale d and 32 int8 q; value = d * q
    const uint8_t* block = row + (c / 4) * 34;
    uint16_t d;
    std::memcpy(&d, block, sizeof d);
    const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(block + 2 + (c % 4) * 8));
    return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), _mm256_set1_ps(_cvtsh_ss(d)));
  }
}

template <DType K, DType V>
void attend(const float* q, KvSlice keys, KvSlice values, int n, int hd, float scale, float* scores, float* out) {
  const int chunks = hd / 8;
  for (int p = 0; p < n; ++p) {
    const uint8_t* row = keys.data + p * keys.stride;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int c = 0;
    for (; c + 2 <= chunks; c += 2) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * c), load8<K>(row, c), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * c + 8), load8<K>(row, c + 1), a1);
    }
    if (c < chunks) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * c), load8<K>(row, c), a0);
    scores[p] = hsum256(_mm256_add_ps(a0, a1)) * scale;
  }
  softmax(scores, n);
  for (int c = 0; c < chunks; ++c) _mm256_storeu_ps(out + 8 * c, _mm256_setzero_ps());
  for (int p = 0; p < n; ++p) {
    const uint8_t* row = values.data + p * values.stride;
    const __m256 e = _mm256_set1_ps(scores[p]);
    for (int c = 0; c < chunks; ++c)
      _mm256_storeu_ps(out + 8 * c, _mm256_fmadd_ps(e, load8<V>(row, c), _mm256_loadu_ps(out + 8 * c)));
  }
}

template <DType K>
bool attend_values(const float* q, KvSlice keys, KvSlice values, int n, int hd, float scale, float* scores,
                   float* out) {
  switch (values.type) {
    case DType::F32:
      if constexpr (K == DType::F32) return false;  // all-F32: attend_head's path, unchanged
      else attend<K, DType::F32>(q, keys, values, n, hd, scale, scores, out);
      return true;
    case DType::F16: attend<K, DType::F16>(q, keys, values, n, hd, scale, scores, out); return true;
    case DType::Q8_0: attend<K, DType::Q8_0>(q, keys, values, n, hd, scale, scores, out); return true;
    default: return false;
  }
}

}  // namespace

bool attend_head_kv_avx2(const float* q, KvSlice keys, KvSlice values, int n, int hd, float scale, float* scores,
                         float* out) {
  if (hd % 8 != 0) return false;
  if ((keys.type == DType::Q8_0 || values.type == DType::Q8_0) && hd % 32 != 0) return false;
  switch (keys.type) {
    case DType::F32: return attend_values<DType::F32>(q, keys, values, n, hd, scale, scores, out);
    case DType::F16: return attend_values<DType::F16>(q, keys, values, n, hd, scale, scores, out);
    case DType::Q8_0: return attend_values<DType::Q8_0>(q, keys, values, n, hd, scale, scores, out);
    default: return false;
  }
}

}  // namespace skiff::kernels

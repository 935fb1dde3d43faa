#include "kernels/attention.h"

#include <algorithm>
#include <vector>

#include "kernels/cpu.h"
#include "kernels/dot.h"
#include "kernels/ops.h"

namespace skiff {

void kernels::attend_head_scalar(const float* q, const float* keys, const float* values, int64_t stride, int n,
                                 int hd, float scale, float* scores, float* out) {
  for (int p = 0; p < n; ++p) scores[p] = dot_f32(q, keys + p * stride, hd) * scale;
  softmax(scores, n);
  std::fill(out, out + hd, 0.0f);
  for (int p = 0; p < n; ++p) axpy_f32(scores[p], values + p * stride, out, hd);
}

void kernels::attend_head_kv_scalar(const float* q, KvSlice keys, KvSlice values, int n, int hd, float scale,
                                    float* scores, float* out) {
  // One position's slice converted to floats at a time (dequantize_row: ggml's definitions).
  thread_local std::vector<float> row;
  row.resize(static_cast<size_t>(hd));
  for (int p = 0; p < n; ++p) {
    dequantize_row(keys.type, keys.data + p * keys.stride, row.data(), hd);
    scores[p] = dot_f32(q, row.data(), hd) * scale;
  }
  softmax(scores, n);
  std::fill(out, out + hd, 0.0f);
  for (int p = 0; p < n; ++p) {
    dequantize_row(values.type, values.data + p * values.stride, row.data(), hd);
    axpy_f32(scores[p], row.data(), out, hd);
  }
}

void attend_head_kv(const float* q, KvSlice keys, KvSlice values, int n, int hd, float scale, float* scores,
                    float* out) {
  const CpuPath path = active_cpu_path();
  if (path == CpuPath::Avx512 && kernels::attend_head_kv_avx512(q, keys, values, n, hd, scale, scores, out)) return;
  if (path == CpuPath::Avx2 && kernels::attend_head_kv_avx2(q, keys, values, n, hd, scale, scores, out)) return;
  kernels::attend_head_kv_scalar(q, keys, values, n, hd, scale, scores, out);
}

void attend_head(const float* q, const float* keys, const float* values, int64_t stride, int n, int hd, float scale,
                 float* scores, float* out) {
  if (active_cpu_path() == CpuPath::Avx512 &&
      kernels::attend_head_avx512(q, keys, values, stride, n, hd, scale, scores, out))
    return;
  kernels::attend_head_scalar(q, keys, values, stride, n, hd, scale, scores, out);
}

void attend_heads_kv(const float* q, KvSlice keys, KvSlice values, int group, int n, int hd, float scale,
                     float* scores, float* out) {
  if (active_cpu_path() == CpuPath::Avx512 &&
      kernels::attend_heads_avx512(q, keys, values, group, n, hd, scale, scores, out))
    return;
  const bool all_f32 = keys.type == DType::F32 && values.type == DType::F32 && keys.stride == values.stride;
  for (int g = 0; g < group; ++g) {
    const float* qg = q + static_cast<int64_t>(g) * hd;
    float* og = out + static_cast<int64_t>(g) * hd;
    if (all_f32) {
      attend_head(qg, reinterpret_cast<const float*>(keys.data), reinterpret_cast<const float*>(values.data),
                  keys.stride / static_cast<int64_t>(sizeof(float)), n, hd, scale, scores, og);
    } else {
      attend_head_kv(qg, keys, values, n, hd, scale, scores, og);
    }
  }
}

}  // namespace skiff

#include "kernels/attention.h"

#include <algorithm>

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

void attend_head(const float* q, const float* keys, const float* values, int64_t stride, int n, int hd, float scale,
                 float* scores, float* out) {
  if (active_cpu_path() == CpuPath::Avx512 &&
      kernels::attend_head_avx512(q, keys, values, stride, n, hd, scale, scores, out))
    return;
  kernels::attend_head_scalar(q, keys, values, stride, n, hd, scale, scores, out);
}

}  // namespace skiff

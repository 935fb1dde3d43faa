#include "kernels/dot.h"

#include "kernels/cpu.h"

namespace skiff {

namespace kernels {

float dot_f32_scalar(const float* a, const float* b, int64_t n) {
  // Four partial sums: the same association order on every run, and some ILP.
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

void axpy_f32_scalar(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

}  // namespace kernels

float dot_f32(const float* a, const float* b, int64_t n) {
  switch (active_cpu_path()) {
    case CpuPath::Avx512: return kernels::dot_f32_avx512(a, b, n);
    case CpuPath::Avx2: return kernels::dot_f32_avx2(a, b, n);
    default: return kernels::dot_f32_scalar(a, b, n);
  }
}

void axpy_f32(float a, const float* x, float* y, int64_t n) {
  switch (active_cpu_path()) {
    case CpuPath::Avx512: return kernels::axpy_f32_avx512(a, x, y, n);
    case CpuPath::Avx2: return kernels::axpy_f32_avx2(a, x, y, n);
    default: return kernels::axpy_f32_scalar(a, x, y, n);
  }
}

}  // namespace skiff

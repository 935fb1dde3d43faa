#include "flash/bundle_math.h"

#include <cstring>

#include "base/error.h"
#include "kernels/cpu.h"
#include "kernels/dot.h"

namespace skiff::flash {

namespace {

float element(DType type, const uint8_t* row, int64_t i) {
  uint16_t h;
  switch (type) {
    case DType::F32: {
      float f;
      std::memcpy(&f, row + 4 * i, 4);
      return f;
    }
    case DType::F16: std::memcpy(&h, row + 2 * i, 2); return fp16_to_fp32(h);
    case DType::BF16: std::memcpy(&h, row + 2 * i, 2); return bf16_to_fp32(h);
    default: fail("flash bundles of type {} are not supported", dtype_name(type));
  }
}

}  // namespace

float dot_row(DType type, const uint8_t* row, const float* x, int64_t n) {
  if (type == DType::F32) return dot_f32(reinterpret_cast<const float*>(row), x, n);
  if (active_cpu_path() == CpuPath::Avx512) return kernels::dot_row_avx512(type, row, x, n);
  float s0 = 0, s1 = 0;
  int64_t i = 0;
  for (; i + 2 <= n; i += 2) {
    s0 += element(type, row, i) * x[i];
    s1 += element(type, row, i + 1) * x[i + 1];
  }
  if (i < n) s0 += element(type, row, i) * x[i];
  return s0 + s1;
}

void axpy_row(DType type, float a, const uint8_t* row, float* y, int64_t n) {
  if (type == DType::F32) return axpy_f32(a, reinterpret_cast<const float*>(row), y, n);
  if (active_cpu_path() == CpuPath::Avx512) return kernels::axpy_row_avx512(type, a, row, y, n);
  for (int64_t i = 0; i < n; ++i) y[i] += a * element(type, row, i);
}

}  // namespace skiff::flash

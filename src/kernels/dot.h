// Dot products, the inner loop of every matrix-vector product. One implementation per CPU
// path; dot_f32 dispatches to the active one.
#pragma once

#include <cstdint>

namespace skiff {

float dot_f32(const float* a, const float* b, int64_t n);
// y[i] += a * x[i]
void axpy_f32(float a, const float* x, float* y, int64_t n);

namespace kernels {
float dot_f32_scalar(const float* a, const float* b, int64_t n);
float dot_f32_avx2(const float* a, const float* b, int64_t n);
float dot_f32_avx512(const float* a, const float* b, int64_t n);
void axpy_f32_scalar(float a, const float* x, float* y, int64_t n);
void axpy_f32_avx2(float a, const float* x, float* y, int64_t n);
void axpy_f32_avx512(float a, const float* x, float* y, int64_t n);
}  // namespace kernels

}  // namespace skiff

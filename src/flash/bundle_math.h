// The two inner loops of a neuron-wise FFN over cached bundles: the dot product of an up
// (or gate) row with the input, and y += a * down column. Rows are F32, F16 or BF16 (the
// bundle types); one implementation per CPU path, chosen at run time like kernels/dot.h.
#pragma once

#include <cstdint>

#include "tensor/dtype.h"

namespace skiff::flash {

// sum_i row[i] * x[i] over n elements of `type`.
float dot_row(DType type, const uint8_t* row, const float* x, int64_t n);
// y[i] += a * row[i]
void axpy_row(DType type, float a, const uint8_t* row, float* y, int64_t n);

namespace kernels {
float dot_row_avx512(DType type, const uint8_t* row, const float* x, int64_t n);
void axpy_row_avx512(DType type, float a, const uint8_t* row, float* y, int64_t n);
}  // namespace kernels

}  // namespace skiff::flash

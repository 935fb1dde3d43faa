// Fast row dequantizers (AVX-512) for the types whose matmul dequantizes weights on the fly.
// Each gives exactly the reference values (dequantize_row in tensor/dtype.h), bit for bit.
#pragma once

#include <cstdint>

#include "tensor/dtype.h"

namespace skiff::kernels {

// Returns false for a type it does not handle (then use dequantize_row).
bool dequantize_row_avx512(DType type, const uint8_t* src, float* dst, int64_t n);

}  // namespace skiff::kernels

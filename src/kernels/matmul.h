// y = x W^T for a weight matrix W of any readable type: W has `rows` output features of
// `cols` inputs each; x holds T input rows of `cols` floats; y gets T rows of `rows` floats.
// Work is split over the weight rows, so every weight byte is read once per call whatever T
// is (prefill amortizes the weight reads over T positions).
#pragma once

#include <cstdint>

#include "base/thread_pool.h"
#include "tensor/tensor.h"

namespace skiff {

void matmul(const TensorView& w, const float* x, int64_t T, float* y, ThreadPool& pool);

// Copies row r of W into out as floats (embedding lookup for any type).
void dequantize_tensor_row(const TensorView& w, int64_t r, float* out);

}  // namespace skiff

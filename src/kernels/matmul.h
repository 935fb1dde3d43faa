// y = x W^T for a weight matrix W of any readable type: W has `rows` output features of
// `cols` inputs each; x holds T input rows of `cols` floats; y gets T rows of `rows` floats.
//
// Invariants every path keeps (tests/test_matmul.cpp checks them bit for bit):
// - batch invariance: y[t][r] is computed by the same sequence of floating-point operations
//   whatever T is and wherever row t falls in a tile, so a position's result does not depend
//   on how many positions share the call (speculative verification relies on this);
// - thread invariance: each y[t][r] is computed wholly by one thread, in the same way for
//   any thread count.
// Q8_0 and Q4_0 weights take their input quantized on the fly to 8-bit blocks of 32, Q4_K,
// Q5_K and Q6_K to 8-bit blocks of 256 (as llama.cpp does), and use integer dot products; on
// CPUs with AVX512-BF16, BF16 weights take their input rounded to bf16 (as llama.cpp does) and
// use vdpbf16ps; every other type computes in float32 from exact weights. Weights
// are read in place (memory-mapped), or from TensorView::packed when the model packed them for
// the active path (kernels/repack.h: Q4_0, Q8_0, F16 and BF16 on AVX-512).
#pragma once

#include <cstdint>
#include <span>

#include "base/thread_pool.h"
#include "tensor/tensor.h"

namespace skiff {

void matmul(const TensorView& w, const float* x, int64_t T, float* y, ThreadPool& pool);

// Several matrices applied to the same input (Q, K and V; gate and up): the input is prepared
// once and all rows share one parallel loop. Every w must have the same cols.
struct MatmulJob {
  const TensorView* w;
  float* y;  // [T][w->rows]
};
void matmul_many(std::span<const MatmulJob> jobs, const float* x, int64_t T, ThreadPool& pool);

// Copies row r of W into out as floats (embedding lookup for any type).
void dequantize_tensor_row(const TensorView& w, int64_t r, float* out);

// How many inputs share one 8-bit scale when the active CPU path quantizes the input of
// `type` (32, or 256 for K-quants; see above); 0 when it computes with the floats.
int64_t matmul_input_block(DType type);
// Whether the active CPU path rounds the input of `type` to bf16 (BF16 weights, AVX512-BF16).
bool matmul_input_bf16(DType type);

}  // namespace skiff

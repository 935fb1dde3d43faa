// The three matrix products of training, over float32 row-major buffers:
//   forward          y[N][OC]  = x[N][C] W[OC][C]^T
//   backward input   dx[N][C] += dy[N][OC] W[OC][C]
//   backward weight  dW[OC][C] += dy[N][OC]^T x[N][C]
// Invariant (resume and the thread-count comparison rely on it): every output element is
// computed wholly by one thread, in a fixed order, so results do not depend on the thread
// count. Each product has a baseline and an AVX-512 build of the same source
// (train_kernels_impl.h); the active CPU path (kernels/cpu.h) picks one.
#pragma once

#include <cstdint>

#include "base/thread_pool.h"

namespace skiff::train {

void matmul_forward(float* y, const float* x, const float* w, int64_t N, int64_t C, int64_t OC,
                    ThreadPool& pool);
void matmul_backward_input(float* dx, const float* dy, const float* w, int64_t N, int64_t C,
                           int64_t OC, ThreadPool& pool);
void matmul_backward_weight(float* dw, const float* dy, const float* x, int64_t N, int64_t C,
                            int64_t OC, ThreadPool& pool);

namespace kernels {
// One block of work each; the dispatchers above split the outer dimension across threads.
// [n0, n1) rows of dx (or of y = x Wt for the forward); [o0, o1) rows of dW.
void backward_input_rows_scalar(float* dx, const float* dy, const float* w, int64_t n0,
                                int64_t n1, int64_t C, int64_t OC);
void backward_input_rows_avx512(float* dx, const float* dy, const float* w, int64_t n0,
                                int64_t n1, int64_t C, int64_t OC);
void backward_weight_rows_scalar(float* dw, const float* dy, const float* x, int64_t N,
                                 int64_t C, int64_t OC, int64_t o0, int64_t o1);
void backward_weight_rows_avx512(float* dw, const float* dy, const float* x, int64_t N,
                                 int64_t C, int64_t OC, int64_t o0, int64_t o1);
}  // namespace kernels

}  // namespace skiff::train

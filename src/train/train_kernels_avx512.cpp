// The training matmuls built with AVX-512 flags (see train_kernels_impl.h).
#include "train/train_kernels.h"
#include "train/train_kernels_impl.h"

namespace skiff::train::kernels {

void backward_input_rows_avx512(float* dx, const float* dy, const float* w, int64_t n0,
                                int64_t n1, int64_t C, int64_t OC) {
  backward_input_rows_impl(dx, dy, w, n0, n1, C, OC);
}
void backward_weight_rows_avx512(float* dw, const float* dy, const float* x, int64_t N,
                                 int64_t C, int64_t OC, int64_t o0, int64_t o1) {
  backward_weight_rows_impl(dw, dy, x, N, C, OC, o0, o1);
}

}  // namespace skiff::train::kernels

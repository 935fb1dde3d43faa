#include "train/train_kernels.h"

#include <algorithm>
#include <vector>

#include "kernels/cpu.h"
#include "train/train_kernels_impl.h"

namespace skiff::train {

namespace kernels {
void backward_input_rows_scalar(float* dx, const float* dy, const float* w, int64_t n0,
                                int64_t n1, int64_t C, int64_t OC) {
  backward_input_rows_impl(dx, dy, w, n0, n1, C, OC);
}
void backward_weight_rows_scalar(float* dw, const float* dy, const float* x, int64_t N,
                                 int64_t C, int64_t OC, int64_t o0, int64_t o1) {
  backward_weight_rows_impl(dw, dy, x, N, C, OC, o0, o1);
}
}  // namespace kernels

namespace {
bool use_avx512() { return active_cpu_path() == CpuPath::Avx512; }
constexpr int64_t kTile = 4;  // rows per unit of parallel work (the kernels' tile height)
}  // namespace

// y = x W^T is computed as y = x Wt with Wt = W^T [C][OC] made once per call (C*OC moves
// against N*C*OC multiply-adds): the backward-input kernel's broadcast-and-add form, which
// needs no horizontal sums.
void matmul_forward(float* y, const float* x, const float* w, int64_t N, int64_t C, int64_t OC,
                    ThreadPool& pool) {
  thread_local std::vector<float> wt;
  wt.resize(static_cast<size_t>(C * OC));
  for (int64_t o = 0; o < OC; ++o)
    for (int64_t c = 0; c < C; ++c) wt[static_cast<size_t>(c * OC + o)] = w[o * C + c];
  auto fn = use_avx512() ? kernels::backward_input_rows_avx512 : kernels::backward_input_rows_scalar;
  const float* wtp = wt.data();
  pool.parallel_for((N + kTile - 1) / kTile, [&](int64_t b, int64_t e, int) {
    const int64_t n0 = b * kTile, n1 = std::min(e * kTile, N);
    std::fill(y + n0 * OC, y + n1 * OC, 0.0f);
    fn(y, x, wtp, n0, n1, OC, C);
  });
}

void matmul_backward_input(float* dx, const float* dy, const float* w, int64_t N, int64_t C,
                           int64_t OC, ThreadPool& pool) {
  auto fn = use_avx512() ? kernels::backward_input_rows_avx512 : kernels::backward_input_rows_scalar;
  pool.parallel_for((N + kTile - 1) / kTile, [&](int64_t b, int64_t e, int) {
    fn(dx, dy, w, b * kTile, std::min(e * kTile, N), C, OC);
  });
}

void matmul_backward_weight(float* dw, const float* dy, const float* x, int64_t N, int64_t C,
                            int64_t OC, ThreadPool& pool) {
  auto fn = use_avx512() ? kernels::backward_weight_rows_avx512 : kernels::backward_weight_rows_scalar;
  pool.parallel_for((OC + kTile - 1) / kTile, [&](int64_t b, int64_t e, int) {
    fn(dw, dy, x, N, C, OC, b * kTile, std::min(e * kTile, OC));
  });
}

}  // namespace skiff::train

#include "kernels/matmul.h"

#include <vector>

#include "kernels/dot.h"

namespace skiff {

void dequantize_tensor_row(const TensorView& w, int64_t r, float* out) {
  dequantize_row(w.type, w.row(r), out, w.cols);
}

void matmul(const TensorView& w, const float* x, int64_t T, float* y, ThreadPool& pool) {
  const int64_t rows = w.rows, cols = w.cols;
  pool.parallel_for(rows, [&](int64_t begin, int64_t end, int) {
    // Non-F32 rows are dequantized once into a scratch row, then dotted with every input.
    thread_local std::vector<float> scratch;
    if (w.type != DType::F32 && static_cast<int64_t>(scratch.size()) < cols) scratch.resize(cols);
    for (int64_t r = begin; r < end; ++r) {
      const float* wr;
      if (w.type == DType::F32) {
        wr = reinterpret_cast<const float*>(w.row(r));
      } else {
        dequantize_row(w.type, w.row(r), scratch.data(), cols);
        wr = scratch.data();
      }
      for (int64_t t = 0; t < T; ++t) y[t * rows + r] = dot_f32(wr, x + t * cols, cols);
    }
  });
}

}  // namespace skiff

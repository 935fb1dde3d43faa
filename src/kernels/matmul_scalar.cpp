// Scalar matmul kernels: the reference the SIMD paths are tested against, and the path for
// CPUs without AVX2. Q8_0 / Q4_0 weights: integer dot product per block of 32 with the
// 8-bit input, then acc += float(isum) * (d_w * d_x), block by block.
#include <cstring>

#include "kernels/matmul_impl.h"

namespace skiff::kernels {
namespace {

float half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return fp16_to_fp32(h);
}

// Integer dot product of one weight block (as signed values) with 32 input bytes.
int32_t block_dot_q8_0(const uint8_t* block, const int8_t* x) {
  const int8_t* w = reinterpret_cast<const int8_t*>(block + 2);
  int32_t sum = 0;
  for (int i = 0; i < 32; ++i) sum += int32_t{w[i]} * x[i];
  return sum;
}

int32_t block_dot_q4_0(const uint8_t* block, const int8_t* x) {
  const uint8_t* qs = block + 2;
  int32_t sum = 0;
  for (int i = 0; i < 16; ++i) {
    sum += ((qs[i] & 0x0F) - 8) * int32_t{x[i]};
    sum += ((qs[i] >> 4) - 8) * int32_t{x[i + 16]};
  }
  return sum;
}

template <int kBlockBytes, int32_t (*BlockDot)(const uint8_t*, const int8_t*)>
void run_q8_input(const TensorView& w, int64_t r0, int64_t r1, const uint8_t* in, size_t in_stride,
                  int64_t T, float* y, int64_t y_stride) {
  const int64_t nb = w.cols / 32;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = w.row(r);
    for (int64_t t = 0; t < T; ++t) {
      const uint8_t* pos = in + static_cast<size_t>(t) * in_stride;
      const float* dx = reinterpret_cast<const float*>(pos);
      const int8_t* qx = reinterpret_cast<const int8_t*>(pos + nb * sizeof(float));
      float acc = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* block = row + b * kBlockBytes;
        const int32_t isum = BlockDot(block, qx + b * 32);
        acc += static_cast<float>(isum) * (half_at(block) * dx[b]);
      }
      y[t * y_stride + r] = acc;
    }
  }
}

}  // namespace

MatmulKernel matmul_kernel_scalar(DType type) {
  switch (type) {
    case DType::Q8_0: return {InputFormat::Q8, run_q8_input<34, block_dot_q8_0>};
    case DType::Q4_0: return {InputFormat::Q8, run_q8_input<18, block_dot_q4_0>};
    default: return {};
  }
}

}  // namespace skiff::kernels

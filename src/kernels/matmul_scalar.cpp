// Scalar matmul kernels: the reference the SIMD paths are tested against, and the path for
// CPUs without AVX2. Q8_0 / Q4_0 weights: integer dot product per block of 32 with the
// 8-bit input, then acc += float(isum) * (d_w * d_x), block by block; Q4_K / Q5_K / Q6_K
// the same per super-block of 256.
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

// One row against one position's input (blocks of 32: nb scales, then the int8 values).
template <int kBlockBytes, int32_t (*BlockDot)(const uint8_t*, const int8_t*)>
float row_dot_q8(const uint8_t* row, const uint8_t* pos, int64_t cols) {
  const int64_t nb = cols / 32;
  const float* dx = reinterpret_cast<const float*>(pos);
  const int8_t* qx = reinterpret_cast<const int8_t*>(pos + nb * sizeof(float));
  float acc = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* block = row + b * kBlockBytes;
    acc += static_cast<float>(BlockDot(block, qx + b * 32)) * (half_at(block) * dx[b]);
  }
  return acc;
}

template <float (*RowDot)(const uint8_t*, const uint8_t*, int64_t)>
void run_rows(const TensorView& w, int64_t r0, int64_t r1, const uint8_t* in, size_t in_stride,
              int64_t T, float* y, int64_t y_stride) {
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t t = 0; t < T; ++t) y[t * y_stride + r] = RowDot(w.row(r), in + static_cast<size_t>(t) * in_stride, w.cols);
}

// K-quants against Q8KBlock inputs: per super-block of 256 an integer sum, scaled once by
// the weights' d (and dmin) times the input's d. Written element by element from the block
// layouts (tensor/dtype.cpp decodes the same bytes) as the reference for the SIMD kernels.

// Q4_K: fp16 d, fp16 dmin, 12 bytes of 6-bit scales and minimums for eight sub-blocks of 32,
// 128 bytes of nibbles: bytes 32j..32j+31 hold sub-block 2j in their low nibbles and 2j+1 in
// their high nibbles. Weight = d * scale * q - dmin * min.
// Q5_K: Q4_K's d, dmin and scales, then qh[32] (bit j of qh[l] is the fifth bit of weight
// l of sub-block j), then the nibbles as in Q4_K.
template <bool kFifthBit>
float superblock_dot_q4_k(const uint8_t* b, const Q8KBlock& x) {
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + (kFifthBit ? 48 : 16);
  uint8_t sm[16];  // scales 0..7, minimums 0..7
  unpack_q4_k_scales(b + 4, sm);
  int32_t isum = 0, msum = 0;
  for (int j = 0; j < 8; ++j) {
    const int sc = sm[j], m = sm[8 + j];
    int32_t dot = 0;
    for (int l = 0; l < 32; ++l) {
      const uint8_t byte = qs[(j / 2) * 32 + l];
      int q = j % 2 == 0 ? byte & 0x0F : byte >> 4;
      if (kFifthBit) q |= ((qh[l] >> j) & 1) << 4;
      dot += q * int32_t{x.q[j * 32 + l]};
    }
    isum += sc * dot;
    msum += m * (x.bsum[2 * j] + x.bsum[2 * j + 1]);
  }
  return static_cast<float>(isum) * (half_at(b) * x.d) - static_cast<float>(msum) * (half_at(b + 2) * x.d);
}

// Q6_K: 128 bytes of low nibbles (ql), 64 bytes of 2-bit highs (qh), 16 int8 scales (one per
// 16 weights), fp16 d. In each half of 128 weights, weight l (0..31) + 32k takes ql's nibble
// (byte l + 32 * (k & 1), high nibble for k >= 2) and bits 2k, 2k+1 of qh[l]. Weight =
// d * scale * (q - 32).
float superblock_dot_q6_k(const uint8_t* b, const Q8KBlock& x) {
  const int8_t* scales = reinterpret_cast<const int8_t*>(b + 192);
  int32_t isum = 0;
  for (int g = 0; g < 16; ++g) {
    int32_t dot = 0;
    for (int i = 0; i < 16; ++i) {
      const int w = g * 16 + i, half = w / 128, k = (w % 128) / 32, l = w % 32;
      const uint8_t lo = b[half * 64 + l + 32 * (k & 1)];
      const int q = (k >= 2 ? lo >> 4 : lo & 0x0F) | (((b[128 + half * 32 + l] >> (2 * k)) & 3) << 4);
      dot += q * int32_t{x.q[w]};
    }
    isum += scales[g] * (dot - 32 * x.bsum[g]);
  }
  return static_cast<float>(isum) * (half_at(b + 208) * x.d);
}

template <int kBlockBytes, float (*SuperblockDot)(const uint8_t*, const Q8KBlock&)>
float row_dot_q8k(const uint8_t* row, const uint8_t* pos, int64_t cols) {
  const auto* x = reinterpret_cast<const Q8KBlock*>(pos);
  float acc = 0.0f;
  for (int64_t b = 0; b < cols / 256; ++b) acc += SuperblockDot(row + b * kBlockBytes, x[b]);
  return acc;
}

}  // namespace

MatmulKernel matmul_kernel_scalar(DType type) {
  switch (type) {
    case DType::Q8_0: return {InputFormat::Q8, run_rows<row_dot_q8<34, block_dot_q8_0>>};
    case DType::Q4_0: return {InputFormat::Q8, run_rows<row_dot_q8<18, block_dot_q4_0>>};
    case DType::Q4_K: return {InputFormat::Q8K, run_rows<row_dot_q8k<144, superblock_dot_q4_k<false>>>};
    case DType::Q5_K: return {InputFormat::Q8K, run_rows<row_dot_q8k<176, superblock_dot_q4_k<true>>>};
    case DType::Q6_K: return {InputFormat::Q8K, run_rows<row_dot_q8k<210, superblock_dot_q6_k>>};
    default: return {};
  }
}

}  // namespace skiff::kernels

// Helpers the kernel tests share: the CPU paths this machine can run (each test forces them in
// turn), a guard that restores the active one, uniform random vectors and random matrices.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu.h"
#include "tensor/dtype.h"
#include "tensor/tensor.h"

namespace skiff::test {

inline std::vector<CpuPath> available_paths() {
  std::vector<CpuPath> paths;
  for (CpuPath p : {CpuPath::Scalar, CpuPath::Avx2, CpuPath::Avx512})
    if (p <= best_cpu_path()) paths.push_back(p);
  return paths;
}

struct RestorePath {
  CpuPath saved = active_cpu_path();
  ~RestorePath() { set_cpu_path(saved); }
};

// n values uniform in [-scale, scale), the same for the same seed.
inline std::vector<float> random_vector(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

// A random rows x cols matrix of `type` (weights uniform in [-0.5, 0.5), quantized) and what
// its bytes mean as floats. Q5_K, which has no quantizer, gets random valid blocks.
struct Matrix {
  std::vector<uint8_t> bytes;
  TensorView view;
  std::vector<float> dequantized;  // what the file means: rows x cols floats
};

inline Matrix make_matrix(DType type, int64_t rows, int64_t cols, uint32_t seed) {
  Matrix m;
  const size_t rb = row_bytes(type, cols);
  m.bytes.resize(rb * static_cast<size_t>(rows));
  std::vector<float> w = random_vector(static_cast<size_t>(rows * cols), seed, 0.5f);
  m.dequantized.resize(w.size());
  std::mt19937 rng(seed);
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* dst = m.bytes.data() + rb * static_cast<size_t>(r);
    if (type == DType::Q5_K) {
      // No quantizer for Q5_K: random bytes are valid blocks (every bit pattern of scales,
      // fifth bits and nibbles), with small finite d and dmin (fp16, bytes 0..3).
      for (size_t i = 0; i < rb; ++i) dst[i] = static_cast<uint8_t>(rng());
      for (size_t blk = 0; blk < rb; blk += 176) {
        const uint16_t d = fp32_to_fp16(0.001f * static_cast<float>(1 + rng() % 16));
        const uint16_t dmin = fp32_to_fp16(0.002f * static_cast<float>(1 + rng() % 16));
        std::memcpy(dst + blk, &d, 2);
        std::memcpy(dst + blk + 2, &dmin, 2);
      }
    } else {
      EXPECT_TRUE(quantize_row(type, &w[static_cast<size_t>(r * cols)], dst, cols)) << dtype_name(type);
    }
    dequantize_row(type, dst, &m.dequantized[static_cast<size_t>(r * cols)], cols);
  }
  m.view = matrix_view(type, m.bytes.data(), rows, cols, std::string(dtype_name(type)));
  return m;
}

}  // namespace skiff::test

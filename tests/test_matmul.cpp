// matmul on every weight type and every CPU path this machine has, over odd sizes:
// - against the scalar path (same input integers for the 8-bit-input types) and against a
//   float64 product of the dequantized weights;
// - batch invariance, bit for bit: row t of a T = 7 call equals a T = 1 call on row t alone
//   (self-speculative verification depends on it), and matmul_many equals separate calls;
// - thread invariance, bit for bit: 1, 2 and 3 threads give the same bits.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu.h"
#include "kernels/matmul.h"
#include "kernels/matmul_impl.h"
#include "kernels/repack.h"
#include "kernel_test_util.h"

namespace skiff {
namespace {

using test::available_paths;
using test::make_matrix;
using test::Matrix;
using test::random_vector;
using test::RestorePath;

struct Case {
  DType type;
  int64_t cols;
};

// Odd row counts, and for the 32-blocks an odd block count (the AVX-512 kernels take blocks
// in pairs), for the floats a length that is not a multiple of 16.
const Case kCases[] = {
    {DType::F32, 67},   {DType::F32, 160},  {DType::F16, 67},   {DType::F16, 96},
    {DType::F32, 1041}, {DType::F16, 1041}, {DType::BF16, 531},  // several column chunks
    {DType::BF16, 67},  {DType::BF16, 96},  {DType::Q8_0, 96},  {DType::Q8_0, 128},
    {DType::Q4_0, 96},  {DType::Q4_0, 160}, {DType::Q4_1, 96},  {DType::Q5_0, 96},
    {DType::Q5_1, 96},  {DType::Q4_K, 256}, {DType::Q4_K, 768}, {DType::Q5_K, 256}, {DType::Q5_K, 768},
    {DType::Q6_K, 256}, {DType::Q6_K, 768},
};

float bf16_value(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

bool bits_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::string label(DType type, int64_t cols, CpuPath path) {
  return std::string(dtype_name(type)) + " cols " + std::to_string(cols) + " " +
         std::string(cpu_path_name(path));
}

TEST(Matmul, MatchesScalarPathAndFloat64OnEveryPath) {
  RestorePath restore;
  ThreadPool pool(2);
  const int64_t rows = 37, T = 7;
  for (const Case& c : kCases) {
    Matrix m = make_matrix(c.type, rows, c.cols, 11);
    std::vector<float> x = random_vector(static_cast<size_t>(T * c.cols), 12);
    set_cpu_path(CpuPath::Scalar);
    std::vector<float> scalar(static_cast<size_t>(T * rows));
    matmul(m.view, x.data(), T, scalar.data(), pool);
    const int64_t scalar_block = matmul_input_block(c.type);
    const bool scalar_bf16 = matmul_input_bf16(c.type);
    for (CpuPath path : available_paths()) {
      set_cpu_path(path);
      std::vector<float> y(static_cast<size_t>(T * rows));
      matmul(m.view, x.data(), T, y.data(), pool);
      const int64_t block = matmul_input_block(c.type);  // 0: float input
      // bf16 input (BF16 on AVX512-BF16): products of the rounded inputs, exact in float32,
      // so held to the float32 tolerance against float64 of exactly those inputs.
      const bool bf16 = matmul_input_bf16(c.type);
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t r = 0; r < rows; ++r) {
          double exact = 0, magnitude = 0, rounding = 0;
          for (int64_t k = 0; k < c.cols; ++k) {
            const float wk = m.dequantized[static_cast<size_t>(r * c.cols + k)];
            const float xk = x[static_cast<size_t>(t * c.cols + k)];
            double term = static_cast<double>(wk) * (bf16 ? bf16_value(kernels::round_to_bf16(xk)) : xk);
            exact += term;
            magnitude += std::fabs(term);
            // 8-bit inputs: each moves by at most half a step, amax / 254 of its block.
            if (block == 0) continue;
            float amax = 0;
            for (int64_t i = k / block * block; i < std::min(c.cols, k / block * block + block); ++i)
              amax = std::max(amax, std::fabs(x[static_cast<size_t>(t * c.cols + i)]));
            rounding += std::fabs(wk) * amax / 254.0;
          }
          const float got = y[static_cast<size_t>(t * rows + r)];
          // Paths that see the same inputs differ only in float32 summation order (a path
          // may keep float inputs where the scalar one quantizes: then only the bound below).
          if (block == scalar_block && bf16 == scalar_bf16) {
            ASSERT_NEAR(got, scalar[static_cast<size_t>(t * rows + r)], 1e-5 * (1 + magnitude))
                << label(c.type, c.cols, path) << " t " << t << " r " << r;
          }
          const double tol = rounding + 1e-5 * (1 + magnitude);
          ASSERT_NEAR(got, exact, tol) << label(c.type, c.cols, path) << " t " << t << " r " << r;
        }
      }
    }
  }
}

TEST(Matmul, BatchInvariantBitForBitOnEveryTypeAndPath) {
  RestorePath restore;
  ThreadPool pool(2);
  const int64_t rows = 37;
  // 7 and 13 positions: one and several position tiles.
  for (const int64_t T : {int64_t{7}, int64_t{13}})
  for (const Case& c : kCases) {
    Matrix m = make_matrix(c.type, rows, c.cols, 21);
    std::vector<float> x = random_vector(static_cast<size_t>(T * c.cols), 22);
    for (CpuPath path : available_paths()) {
      set_cpu_path(path);
      std::vector<float> batch(static_cast<size_t>(T * rows));
      matmul(m.view, x.data(), T, batch.data(), pool);
      for (int64_t t = 0; t < T; ++t) {
        std::vector<float> one(static_cast<size_t>(rows));
        matmul(m.view, &x[static_cast<size_t>(t * c.cols)], 1, one.data(), pool);
        std::vector<float> row(batch.begin() + t * rows, batch.begin() + (t + 1) * rows);
        ASSERT_TRUE(bits_equal(one, row)) << label(c.type, c.cols, path) << " T " << T << " position " << t;
      }
      // Positions 2..5 as a batch of 3 (another place in the position tiles).
      std::vector<float> part(static_cast<size_t>(3 * rows));
      matmul(m.view, &x[static_cast<size_t>(2 * c.cols)], 3, part.data(), pool);
      std::vector<float> want(batch.begin() + 2 * rows, batch.begin() + 5 * rows);
      ASSERT_TRUE(bits_equal(part, want)) << label(c.type, c.cols, path);
    }
  }
}

TEST(Matmul, ManyEqualsSeparateCallsBitForBit) {
  RestorePath restore;
  ThreadPool pool(2);
  const int64_t T = 5, cols = 128;
  Matrix a = make_matrix(DType::Q4_0, 45, cols, 31), b = make_matrix(DType::Q8_0, 19, cols, 32),
         c = make_matrix(DType::F16, 23, cols, 33);
  std::vector<float> x = random_vector(static_cast<size_t>(T * cols), 34);
  for (CpuPath path : available_paths()) {
    set_cpu_path(path);
    std::vector<float> ya(T * 45), yb(T * 19), yc(T * 23), za(T * 45), zb(T * 19), zc(T * 23);
    const MatmulJob jobs[] = {{&a.view, ya.data()}, {&b.view, yb.data()}, {&c.view, yc.data()}};
    matmul_many(jobs, x.data(), T, pool);
    matmul(a.view, x.data(), T, za.data(), pool);
    matmul(b.view, x.data(), T, zb.data(), pool);
    matmul(c.view, x.data(), T, zc.data(), pool);
    EXPECT_TRUE(bits_equal(ya, za) && bits_equal(yb, zb) && bits_equal(yc, zc)) << cpu_path_name(path);
  }
}

TEST(Matmul, ThreadCountDoesNotChangeBits) {
  RestorePath restore;
  // Large enough that the work is shared among threads (small products run serially).
  const int64_t rows = 611, cols = 1024, T = 7;
  for (DType type : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q6_K}) {
    Matrix m = make_matrix(type, rows, cols, 41);
    std::vector<float> x = random_vector(static_cast<size_t>(T * cols), 42);
    for (CpuPath path : available_paths()) {
      set_cpu_path(path);
      std::vector<float> want;
      for (int threads : {1, 2, 3}) {
        ThreadPool pool(threads);
        std::vector<float> y(static_cast<size_t>(T * rows));
        matmul(m.view, x.data(), T, y.data(), pool);
        if (want.empty()) {
          want = y;
        }
        ASSERT_TRUE(bits_equal(y, want)) << label(type, cols, path) << " threads " << threads;
      }
    }
  }
}

TEST(Matmul, InputQuantizationRoundsToNearestWithinHalfAStep) {
  std::vector<float> x = random_vector(96, 51, 3.0f);
  x[5] = 0.0f;
  std::fill(x.begin() + 64, x.end(), 0.0f);  // an all-zero block: scale 0, values 0
  std::vector<int8_t> q(96);
  std::vector<float> d(3);
  kernels::quantize_input_q8(x.data(), 96, q.data(), d.data());
  for (int b = 0; b < 3; ++b) {
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[b * 32 + i]));
    EXPECT_FLOAT_EQ(d[b], amax / 127.0f);
    for (int i = 0; i < 32; ++i) {
      const float v = x[b * 32 + i];
      EXPECT_LE(std::fabs(q[b * 32 + i] * d[b] - v), d[b] * 0.5f + 1e-7f);
      if (std::fabs(v) == amax && amax > 0) {
        EXPECT_EQ(std::abs(q[b * 32 + i]), 127);
      }
    }
  }
  EXPECT_EQ(d[2], 0.0f);
  EXPECT_EQ(q[70], 0);
  // Non-finite inputs give some value in range, never undefined behaviour.
  x[0] = std::nanf("");
  x[1] = INFINITY;
  kernels::quantize_input_q8(x.data(), 32, q.data(), d.data());
  for (int i = 0; i < 32; ++i) EXPECT_LE(std::abs(q[i]), 127);
}

// round_to_bf16 against the definition: the nearer of the two bf16 values around x (found
// by truncation, compared in double), the even one on a tie; denormals to signed zero; NaN
// stays NaN; past the largest bf16 (by half an ulp or more) to infinity.
TEST(Matmul, Bf16InputRoundsToNearestEven) {
  std::mt19937 rng(81);
  std::vector<float> xs = {0.0f, -0.0f, 1.0f, -2.5f, 1.00390625f /* tie, even down */,
                           1.01171875f /* tie, even up */, 3.0e38f, 3.4e38f, INFINITY, -INFINITY,
                           1e-40f, -1e-40f, 1.2e-38f};
  for (int i = 0; i < 20000; ++i) {
    uint32_t u = rng();
    float f;
    std::memcpy(&f, &u, 4);
    xs.push_back(f);
  }
  for (float x : xs) {
    const uint16_t got = kernels::round_to_bf16(x);
    uint32_t u;
    std::memcpy(&u, &x, 4);
    if (std::isnan(x)) {
      EXPECT_TRUE(std::isnan(bf16_value(got))) << u;
      continue;
    }
    if (std::fpclassify(x) == FP_SUBNORMAL || x == 0.0f) {
      EXPECT_EQ(got, static_cast<uint16_t>((u >> 16) & 0x8000u)) << u;
      continue;
    }
    const uint16_t down = static_cast<uint16_t>(u >> 16), up = static_cast<uint16_t>(down + 1);
    const double d_down = std::fabs(static_cast<double>(x) - bf16_value(down));
    // The value above the largest finite bf16 is infinity: 2^128 as a limit for the tie.
    const double up_value = (up & 0x7F80u) == 0x7F80u ? std::copysign(std::ldexp(1.0, 128), x) : bf16_value(up);
    const double d_up = std::isinf(x) ? INFINITY : std::fabs(static_cast<double>(x) - up_value);
    const uint16_t want = d_down < d_up ? down : d_up < d_down ? up : (down & 1) ? up : down;
    EXPECT_EQ(got, want) << "x " << x << " bits " << u;
  }
}

TEST(Matmul, EveryPathPreparesTheSameInputBytes) {
  RestorePath restore;
  // 1056 values: 33 blocks of 32 (an odd last pair), 4 super-blocks of 256 and a rest.
  const int64_t cols = 1056;
  std::vector<float> x = random_vector(static_cast<size_t>(cols), 71, 2.0f);
  std::fill(x.begin() + 64, x.begin() + 96, 0.0f);      // an all-zero block
  x[200] = INFINITY;                                    // scale inf: finite -> 0, inf -> -127
  x[300] = NAN;                                         // skipped by the maximum
  x[301] = 1e-44f;                                      // a denormal
  std::fill(x.begin() + 512, x.begin() + 768, 1e-40f);  // all denormal: scale rounds to 0
  // Scale exactly 1 (amax 127), so these are ties that round to even: 0, 2, -0, ...
  for (int64_t end : {1024, 1056}) {
    x[static_cast<size_t>(end - 1)] = 127.0f;
    for (int i = 0; i < 3; ++i) x[static_cast<size_t>(end - 256 + 2 + i)] = 0.5f + static_cast<float>(i) - (i == 2 ? 3.0f : 0.0f);
    x[static_cast<size_t>(end - 32)] = 2.5f;
  }
  using kernels::InputFormat;
  // bf16 (rounding ties, NaN and denormals above; 1055: a row end inside a 16-value step).
  for (int i = 0; i < 4; ++i) x[static_cast<size_t>(400 + i)] = std::ldexp(1.0f + std::ldexp(1.0f, -8) * static_cast<float>(2 * i + 1), i);
  x[404] = -NAN;
  for (InputFormat f : {InputFormat::Q8Pairs, InputFormat::Q8PairsNibble, InputFormat::Q8K, InputFormat::Q8KNibble,
                        InputFormat::Q8Blocks, InputFormat::BF16}) {
    const int64_t n = f == InputFormat::Q8K || f == InputFormat::Q8KNibble ? 1024
                      : f == InputFormat::BF16                             ? cols - 1
                                                                           : cols;
    const size_t bytes = kernels::input_stride(f, n);
    std::vector<uint8_t> want(bytes, 0xAB);
    kernels::prepare_input_scalar(f, x.data(), n, want.data());
    // Padding past the last block is the buffer's, not the format's.
    const size_t used = f == InputFormat::Q8K || f == InputFormat::Q8KNibble
                            ? static_cast<size_t>(n / 256) * sizeof(kernels::Q8KBlock)
                        : f == InputFormat::Q8Blocks ? static_cast<size_t>(n / 32) * sizeof(kernels::Q8Block)
                        : f == InputFormat::BF16     ? static_cast<size_t>(n) * sizeof(uint16_t)
                            : static_cast<size_t>((n / 32 + 1) / 2) * sizeof(kernels::Q8Pair);
    for (CpuPath path : available_paths()) {
      set_cpu_path(path);
      std::vector<uint8_t> got(bytes, 0xCD);
      kernels::prepare_input(f, x.data(), n, got.data());
      EXPECT_EQ(std::memcmp(want.data(), got.data(), used), 0)
          << "format " << static_cast<int>(f) << " " << cpu_path_name(path);
      if (path == CpuPath::Avx512 && (f != InputFormat::BF16 || cpu_has_avx512_bf16())) {
        // and the AVX-512 version itself, not a fallback
        std::fill(got.begin(), got.end(), uint8_t{0xCD});
        EXPECT_TRUE(kernels::prepare_input_avx512(f, x.data(), n, got.data()));
        EXPECT_EQ(std::memcmp(want.data(), got.data(), used), 0) << "format " << static_cast<int>(f);
      }
    }
  }
}

// Q4_0 and Q8_0 packed for the AVX-512 kernels (kernels/repack.h): the same input integers as
// the row-major kernels, so only float summation order differs; and the invariants bit for bit.
struct PackedMatrix {
  Matrix m;
  PackedBytes packed;
};

PackedMatrix make_packed(DType type, int64_t rows, int64_t cols, uint32_t seed) {
  PackedMatrix p{make_matrix(type, rows, cols, seed), nullptr};
  p.packed = pack_matrix(p.m.view);
  p.m.view.packed = p.packed.get();
  return p;
}

// The packed matrix's product against the same matrix row-major (tolerance near_row_major) and
// a float64 product of its weights and input(x) (near_float64), both relative to the sum of
// the terms' magnitudes; x random from seed.
template <class Input>
void expect_packed_near_row_major_and_float64(const PackedMatrix& p, int64_t T, ThreadPool& pool, uint32_t seed,
                                              double near_row_major, double near_float64, Input input) {
  const int64_t rows = p.m.view.rows, cols = p.m.view.cols;
  TensorView plain = p.m.view;
  plain.packed = nullptr;
  std::vector<float> x = random_vector(static_cast<size_t>(T * cols), seed);
  std::vector<float> got(static_cast<size_t>(T * rows)), want(got.size());
  matmul(p.m.view, x.data(), T, got.data(), pool);
  matmul(plain, x.data(), T, want.data(), pool);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      double exact = 0, magnitude = 0;
      for (int64_t k = 0; k < cols; ++k) {
        const double term = static_cast<double>(p.m.dequantized[static_cast<size_t>(r * cols + k)]) *
                            input(x[static_cast<size_t>(t * cols + k)]);
        exact += term;
        magnitude += std::fabs(term);
      }
      const size_t i = static_cast<size_t>(t * rows + r);
      ASSERT_NEAR(got[i], want[i], near_row_major * (1 + magnitude))
          << dtype_name(p.m.view.type) << " " << rows << "x" << cols << " T " << T << " t " << t << " r " << r;
      ASSERT_NEAR(got[i], exact, near_float64 * (1 + magnitude))
          << dtype_name(p.m.view.type) << " " << rows << "x" << cols << " T " << T << " t " << t << " r " << r;
    }
}

// On every path this CPU has: AVX-512 runs the packed kernel, the others read the file's rows.
TEST(MatmulPacked, MatchesTheRowMajorKernelsAndFloat64) {
  RestorePath restore;
  ThreadPool pool(2);
  for (CpuPath path : available_paths()) {
  set_cpu_path(path);
  SCOPED_TRACE(cpu_path_name(path));
  // Row counts that end inside a group of 16 and a column count of an odd block count.
  for (const DType type : {DType::Q4_0, DType::Q8_0})
  for (const int64_t rows : {int64_t{37}, int64_t{64}, int64_t{100}})
  for (const int64_t cols : {int64_t{96}, int64_t{160}, int64_t{1024}})
  for (const int64_t T : {int64_t{1}, int64_t{6}, int64_t{8}}) {
    PackedMatrix p = make_packed(type, rows, cols, static_cast<uint32_t>(rows + cols));
    expect_packed_near_row_major_and_float64(p, T, pool, 7, 1e-5, 0.02, [](float v) { return v; });
  }
  }
}

// T = 5 and 8: one position tile (verification), with software prefetch; 13: tiles of 4 or 3.
TEST(MatmulPacked, BatchAndThreadInvariantBitForBit) {
  RestorePath restore;
  const int64_t rows = 611, cols = 1024;
  for (CpuPath path : available_paths())
  for (const DType type : {DType::Q4_0, DType::Q8_0})
  for (const int64_t T : {int64_t{5}, int64_t{8}, int64_t{13}}) {
  set_cpu_path(path);
  SCOPED_TRACE(std::string(cpu_path_name(path)) + " " + std::string(dtype_name(type)) + " T " + std::to_string(T));
  PackedMatrix p = make_packed(type, rows, cols, 81);
  std::vector<float> x = random_vector(static_cast<size_t>(T * cols), 82);
  ThreadPool pool(2);
  std::vector<float> batch(static_cast<size_t>(T * rows));
  matmul(p.m.view, x.data(), T, batch.data(), pool);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<float> one(static_cast<size_t>(rows));
    matmul(p.m.view, &x[static_cast<size_t>(t * cols)], 1, one.data(), pool);
    ASSERT_TRUE(bits_equal(one, std::vector<float>(batch.begin() + t * rows, batch.begin() + (t + 1) * rows)))
        << "position " << t;
  }
  for (int threads : {1, 3}) {
    ThreadPool other(threads);
    std::vector<float> y(batch.size());
    matmul(p.m.view, x.data(), T, y.data(), other);
    ASSERT_TRUE(bits_equal(y, batch)) << "threads " << threads;
  }
  // Packed and row-major matrices in one matmul_many.
  Matrix q = make_matrix(DType::Q8_0, 45, cols, 83);
  std::vector<float> ya(batch.size()), yb(static_cast<size_t>(T * 45)), zb(yb.size());
  const MatmulJob jobs[] = {{&p.m.view, ya.data()}, {&q.view, yb.data()}};
  matmul_many(jobs, x.data(), T, pool);
  matmul(q.view, x.data(), T, zb.data(), pool);
  EXPECT_TRUE(bits_equal(ya, batch) && bits_equal(yb, zb));
  }
}

// F32, F16 and BF16 packed column by column (kernels/repack.h, matmul_packed_columns_avx512.cpp):
// the weights and inputs of the row-major kernel (F32, F16: exact; BF16: inputs rounded to bf16
// where the path has AVX512-BF16), so only the summation order differs. Row counts that end
// inside a group and inside a super-group of 8, columns that end inside a chunk of 64 (and
// inside a BF16 pair) and span several of the prefill's column blocks (512), and every tile
// shape: T = 1-3 (8 groups), 4-6 (4 groups), 7-12 (2 groups, one position tile), 13 and 40
// (prefill).
float rounded_input(DType type, float v) {
  if (type != DType::BF16 || !matmul_input_bf16(type)) return v;
  const uint32_t bits = static_cast<uint32_t>(kernels::round_to_bf16(v)) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

TEST(MatmulPacked, ColumnsMatchTheRowMajorKernelAndFloat64) {
  RestorePath restore;
  ThreadPool pool(2);
  for (CpuPath path : available_paths()) {
  set_cpu_path(path);
  SCOPED_TRACE(cpu_path_name(path));
  for (const DType type : {DType::F32, DType::F16, DType::BF16})
  for (const int64_t rows : {int64_t{5}, int64_t{37}, int64_t{300}})
  for (const int64_t cols : {int64_t{7}, int64_t{100}, int64_t{1100}})
  for (const int64_t T : {int64_t{1}, int64_t{3}, int64_t{5}, int64_t{9}, int64_t{13}, int64_t{40}}) {
    PackedMatrix p = make_packed(type, rows, cols, static_cast<uint32_t>(rows * 3 + cols));
    expect_packed_near_row_major_and_float64(p, T, pool, 17, 1e-6, 1e-6,
                                             [type](float v) { return rounded_input(type, v); });
  }
  }
}

TEST(MatmulPacked, ColumnsBatchAndThreadInvariantBitForBit) {
  for (const DType type : {DType::F32, DType::F16, DType::BF16}) {
  SCOPED_TRACE(dtype_name(type));
  const int64_t rows = 300, cols = 1100;
  PackedMatrix p = make_packed(type, rows, cols, 85);
  const int64_t most = 40;
  std::vector<float> x = random_vector(static_cast<size_t>(most * cols), 86);
  ThreadPool pool(2);
  std::vector<float> single(static_cast<size_t>(most * rows));
  for (int64_t t = 0; t < most; ++t)
    matmul(p.m.view, &x[static_cast<size_t>(t * cols)], 1, &single[static_cast<size_t>(t * rows)], pool);
  for (const int64_t T : {int64_t{2}, int64_t{3}, int64_t{4}, int64_t{6}, int64_t{7}, int64_t{12}, int64_t{13},
                          int64_t{25}, most})
    for (int threads : {1, 2, 3}) {
      ThreadPool other(threads);
      std::vector<float> batch(static_cast<size_t>(T * rows));
      matmul(p.m.view, x.data(), T, batch.data(), other);
      ASSERT_TRUE(bits_equal(batch, std::vector<float>(single.begin(), single.begin() + T * rows)))
          << "T " << T << " threads " << threads;
    }
  // In one matmul_many with a row-major matrix and another packed F16 one (Q, K, V).
  PackedMatrix q = make_packed(type, 45, cols, 87);
  Matrix v = make_matrix(type, 45, cols, 88);
  std::vector<float> ya(static_cast<size_t>(13 * rows)), yb(static_cast<size_t>(13 * 45)), zb(yb.size());
  std::vector<float> yc(yb.size()), zc(yb.size());
  const MatmulJob jobs[] = {{&p.m.view, ya.data()}, {&q.m.view, yb.data()}, {&v.view, yc.data()}};
  matmul_many(jobs, x.data(), 13, pool);
  matmul(q.m.view, x.data(), 13, zb.data(), pool);
  matmul(v.view, x.data(), 13, zc.data(), pool);
  EXPECT_TRUE(bits_equal(ya, std::vector<float>(single.begin(), single.begin() + 13 * rows)));
  EXPECT_TRUE(bits_equal(yb, zb));
  EXPECT_TRUE(bits_equal(yc, zc));
  }
}

TEST(MatmulPacked, TilesLayoutsInterleaveEachPositionTile) {
  // 13 positions -> tiles of 7 and 6; 70 columns -> 128 with zeros.
  const int64_t T = 13, cols = 70, kp = 128;
  std::vector<float> x(static_cast<size_t>(T * cols));
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i + 1);
  std::vector<float> out(static_cast<size_t>(T * kp), -1.0f);
  kernels::prepare_input_tiles(x.data(), cols, T, 0, 5, out.data());
  kernels::prepare_input_tiles(x.data(), cols, T, 5, T, out.data());
  EXPECT_EQ(kernels::position_tile(T, 0).c, 7);
  EXPECT_EQ(kernels::position_tile(T, 1).t0, 7);
  for (int64_t t = 0; t < T; ++t) {
    const int64_t t0 = t < 7 ? 0 : 7, c = t < 7 ? 7 : 6;
    for (int64_t k = 0; k < kp; ++k) {
      const float want = k < cols ? x[static_cast<size_t>(t * cols + k)] : 0.0f;
      ASSERT_EQ(out[static_cast<size_t>(t0 * kp + k * c + (t - t0))], want) << "t " << t << " k " << k;
    }
  }
  // BF16Tiles: the same tiles of rounded pairs.
  std::vector<float> xb = random_vector(x.size(), 3);
  std::vector<uint32_t> pairs(static_cast<size_t>(T * kp / 2), 0xDEADBEEF);
  kernels::prepare_input_tiles_bf16(xb.data(), cols, T, 0, T, pairs.data());
  for (int64_t t = 0; t < T; ++t) {
    const int64_t t0 = t < 7 ? 0 : 7, c = t < 7 ? 7 : 6;
    for (int64_t k = 0; k < kp; ++k) {
      const uint32_t word = pairs[static_cast<size_t>(t0 * kp / 2 + k / 2 * c + (t - t0))];
      const uint16_t want = k < cols ? kernels::round_to_bf16(xb[static_cast<size_t>(t * cols + k)]) : 0;
      ASSERT_EQ(static_cast<uint16_t>(k % 2 ? word >> 16 : word & 0xFFFF), want) << "t " << t << " k " << k;
    }
  }
}

TEST(MatmulPacked, TilesLayoutOfOnePositionIsTheRowZeroPadded) {
  // Decode's fast path (a copy, and InputFormat::BF16's rounding): odd cols pad the last pair.
  const int64_t cols = 69, kp = 128;
  std::vector<float> x = random_vector(static_cast<size_t>(cols), 5);
  std::vector<float> out(static_cast<size_t>(kp), -1.0f);
  kernels::prepare_input_tiles(x.data(), cols, 1, 0, 1, out.data());
  for (int64_t k = 0; k < kp; ++k) ASSERT_EQ(out[static_cast<size_t>(k)], k < cols ? x[static_cast<size_t>(k)] : 0.0f) << k;
  std::vector<uint32_t> pairs(static_cast<size_t>(kp / 2), 0xDEADBEEF);
  kernels::prepare_input_tiles_bf16(x.data(), cols, 1, 0, 1, pairs.data());
  for (int64_t p = 0; p < kp / 2; ++p) {
    const uint32_t lo = 2 * p < cols ? kernels::round_to_bf16(x[static_cast<size_t>(2 * p)]) : 0;
    const uint32_t hi = 2 * p + 1 < cols ? kernels::round_to_bf16(x[static_cast<size_t>(2 * p + 1)]) : 0;
    ASSERT_EQ(pairs[static_cast<size_t>(p)], lo | hi << 16) << p;
  }
}

TEST(MatmulPacked, OtherPathsIgnoreThePackedCopy) {
  RestorePath restore;
  ThreadPool pool(1);
  PackedMatrix p = make_packed(DType::Q4_0, 40, 64, 91);
  TensorView plain = p.m.view;
  plain.packed = nullptr;
  std::vector<float> x = random_vector(64 * 3, 92);
  for (CpuPath path : available_paths()) {
    if (path == CpuPath::Avx512) continue;
    set_cpu_path(path);
    std::vector<float> a(3 * 40), b(3 * 40);
    matmul(p.m.view, x.data(), 3, a.data(), pool);
    matmul(plain, x.data(), 3, b.data(), pool);
    EXPECT_TRUE(bits_equal(a, b)) << cpu_path_name(path);
  }
}

TEST(Matmul, DecodePrefetchPlansCoverTheNextRowsAndStayInsideTheMatrix) {
  std::vector<uint8_t> bytes(1000 * 300);
  TensorView w;
  w.type = DType::Q8_0;
  w.rows = 1000;
  w.cols = 256;  // row_stride is set by hand below: only the geometry matters here
  w.row_stride = 300;
  w.data = bytes.data();
  const char* begin = reinterpret_cast<const char*>(bytes.data());
  const char* end = begin + bytes.size();
  for (int64_t first : {0, 8, 500, 992, 996, 999, 1000}) {
    for (int64_t n : {1, 8}) {
      for (int64_t steps : {1, 4, 7, 64}) {
        kernels::TileAhead a = kernels::rows_ahead(w, first, n, steps);
        if (first >= w.rows) {
          EXPECT_EQ(a.end, 0) << first;
          continue;
        }
        EXPECT_EQ(a.base, begin + first * 300);
        EXPECT_EQ(a.next, 0);
        EXPECT_EQ(a.base + a.end, begin + std::min<int64_t>(w.rows, first + n) * 300) << first << " " << n;
        EXPECT_LE(a.base + a.end, end);
        EXPECT_GE(int64_t{a.lines} * steps * 64, n * 300) << "the steps must reach every line";
        // Walking all the steps reaches the end.
        for (int64_t s = 0; s < steps; ++s) a.step();
        EXPECT_GE(a.next, a.end);
      }
    }
  }
}

TEST(ThreadPool, DynamicLoopsCoverEveryIndexOnce) {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (int64_t n : {1, 2, 5, 64, 1001}) {
      for (int64_t grain : {1, 3, 100}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        pool.parallel_for_dynamic(n, grain, [&](int64_t b, int64_t e, int thread) {
          ASSERT_LT(thread, threads);
          for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
        });
        for (auto& h : hits) ASSERT_EQ(h.load(), 1);
      }
    }
  }
}

TEST(ThreadPool, GuidedChunksShrinkToTheMinimumAndCoverEveryIndexOnce) {
  std::vector<int64_t> b;
  guided_bounds(128, 2, 1, b);
  // About a quarter of what is left each time (two threads), down to single units.
  EXPECT_EQ(b.front(), 0);
  EXPECT_EQ(b.back(), 128);
  EXPECT_EQ(b[1], 32);
  EXPECT_EQ(b[2], 56);
  EXPECT_EQ(b[b.size() - 1] - b[b.size() - 2], 1);
  for (size_t i = 2; i < b.size(); ++i) EXPECT_LE(b[i] - b[i - 1], b[i - 1] - b[i - 2]) << i;
  guided_bounds(10, 4, 4, b);
  EXPECT_EQ(b, (std::vector<int64_t>{0, 4, 8, 10}));
  guided_bounds(0, 2, 1, b);
  EXPECT_EQ(b, (std::vector<int64_t>{0}));
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (int64_t n : {1, 2, 5, 64, 1001}) {
      guided_bounds(n, threads, 1, b);
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      pool.parallel_for_chunks(b, [&](int64_t lo, int64_t hi, int thread) {
        ASSERT_LT(thread, threads);
        for (int64_t i = lo; i < hi; ++i) hits[static_cast<size_t>(i)]++;
      });
      for (auto& h : hits) ASSERT_EQ(h.load(), 1);
    }
  }
}

TEST(ThreadPool, IdleWorkersSleep) {
  // After a loop, workers spin briefly and then sleep: an idle pool uses (almost) no CPU.
  ThreadPool pool(2);
  pool.set_spin_microseconds(100);
  std::atomic<int64_t> sum{0};
  pool.parallel_for(1000, [&](int64_t b, int64_t e, int) { sum += e - b; });
  auto cpu_seconds = [] {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9;
  };
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // past the spin
  const double before = cpu_seconds();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_LT(cpu_seconds() - before, 0.02);  // 200 ms of wall time, < 20 ms of CPU
  EXPECT_EQ(sum.load(), 1000);
}

}  // namespace
}  // namespace skiff

// Every kernel against its scalar reference, over odd sizes, on every CPU path this machine
// has (each forced in turn).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <utility>
#include <vector>

#include "kernels/attention.h"
#include "kernels/cpu.h"
#include "kernels/dot.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kernel_test_util.h"
#include "tensor/dtype.h"

namespace skiff {
namespace {

using test::available_paths;
using test::random_vector;
using test::RestorePath;

TEST(Kernels, DotAndAxpyMatchDoubleReferenceOnEveryPath) {
  RestorePath restore;
  for (CpuPath path : available_paths()) {
    set_cpu_path(path);
    ASSERT_EQ(active_cpu_path(), path);
    for (int64_t n : {0, 1, 3, 7, 15, 16, 17, 31, 33, 64, 100, 257, 1023}) {
      auto a = random_vector(static_cast<size_t>(n), 1), b = random_vector(static_cast<size_t>(n), 2);
      double want = 0;
      for (int64_t i = 0; i < n; ++i) want += static_cast<double>(a[i]) * b[i];
      EXPECT_NEAR(dot_f32(a.data(), b.data(), n), want, 1e-5 * (1 + std::sqrt(n)))
          << cpu_path_name(path) << " n=" << n;
      std::vector<float> y = b;
      axpy_f32(0.5f, a.data(), y.data(), n);
      for (int64_t i = 0; i < n; ++i) ASSERT_FLOAT_EQ(y[i], b[i] + 0.5f * a[i]) << cpu_path_name(path);
    }
  }
}

TEST(Kernels, ExpIsWithinTwoUlpOfDoubleExpOnEveryPath) {
  RestorePath restore;
  // A dense sweep of the whole finite range, plus the edges.
  std::vector<float> x;
  for (float v = -104.0f; v <= 89.0f; v += 0.0137f) x.push_back(v);
  for (float v : {0.0f, -0.0f, 1e-30f, -1e-30f, 88.72f, -87.33f, -103.9f}) x.push_back(v);
  for (CpuPath path : available_paths()) {
    set_cpu_path(path);
    std::vector<float> y(x.size());
    exp_f32(x.data(), y.data(), static_cast<int64_t>(x.size()));
    for (size_t i = 0; i < x.size(); ++i) {
      const double want = std::exp(static_cast<double>(x[i]));
      if (want > 3.4028234663852886e38) {  // overflows float
        EXPECT_EQ(y[i], INFINITY) << cpu_path_name(path) << " x=" << x[i];
        continue;
      }
      if (want < 1.2e-38) {  // subnormal results: absolute error within two subnormal ulps
        EXPECT_NEAR(y[i], want, 3e-45) << cpu_path_name(path) << " x=" << x[i];
        continue;
      }
      const double ulp = std::fabs(std::nextafter(static_cast<float>(want), INFINITY) - static_cast<float>(want));
      EXPECT_LE(std::fabs(y[i] - want), 2.0 * ulp) << cpu_path_name(path) << " x=" << x[i];
    }
    float special[] = {INFINITY, -INFINITY, NAN, 200.0f, -200.0f};
    exp_f32(special, special, 5);  // in place
    EXPECT_EQ(special[0], INFINITY) << cpu_path_name(path);
    EXPECT_EQ(special[1], 0.0f) << cpu_path_name(path);
    EXPECT_TRUE(std::isnan(special[2])) << cpu_path_name(path);
    EXPECT_EQ(special[3], INFINITY) << cpu_path_name(path);
    EXPECT_EQ(special[4], 0.0f) << cpu_path_name(path);
  }
}

TEST(Kernels, SwigluMatchesDoubleReferenceOnEveryPath) {
  RestorePath restore;
  for (CpuPath path : available_paths()) {
    set_cpu_path(path);
    for (int64_t n : {1, 15, 16, 17, 100, 1000}) {
      auto g = random_vector(static_cast<size_t>(n), 5), u = random_vector(static_cast<size_t>(n), 6);
      for (auto& v : g) v *= 30.0f;  // both tails of the sigmoid
      std::vector<float> out = g;
      swiglu(out.data(), u.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        const double want = g[i] / (1.0 + std::exp(-static_cast<double>(g[i]))) * u[i];
        EXPECT_NEAR(out[i], want, 1e-6 * std::fabs(want) + 1e-30) << cpu_path_name(path) << " g=" << g[i];
      }
    }
    float g[3] = {INFINITY, -1000.0f, 1000.0f}, u[3] = {1.0f, 1.0f, 2.0f};
    swiglu(g, u, 3);
    EXPECT_EQ(g[0], INFINITY) << cpu_path_name(path);
    EXPECT_EQ(g[1], 0.0f) << cpu_path_name(path);
    EXPECT_EQ(g[2], 2000.0f) << cpu_path_name(path);
  }
}

TEST(Kernels, AttendHeadMatchesDoubleReferenceOnEveryPath) {
  RestorePath restore;
  for (CpuPath path : available_paths()) {
    set_cpu_path(path);
    for (int hd : {8, 16, 17, 48, 64, 100, 128, 256, 300}) {
      for (int n : {1, 3, 4, 5, 17, 130}) {
        const int64_t stride = hd + 7;  // slices of a wider row, as in the KV cache
        auto q = random_vector(static_cast<size_t>(hd), 7);
        auto k = random_vector(static_cast<size_t>(n * stride), 8), v = random_vector(static_cast<size_t>(n * stride), 9);
        for (auto& x : q) x *= 4.0f;  // peaked softmax
        const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
        std::vector<double> s(static_cast<size_t>(n)), want(static_cast<size_t>(hd), 0.0);
        double mx = -1e300, sum = 0.0;
        for (int p = 0; p < n; ++p) {
          double d = 0.0;
          for (int i = 0; i < hd; ++i) d += static_cast<double>(q[i]) * k[p * stride + i];
          s[p] = d * scale;
          mx = std::max(mx, s[p]);
        }
        for (int p = 0; p < n; ++p) sum += (s[p] = std::exp(s[p] - mx));
        for (int p = 0; p < n; ++p)
          for (int i = 0; i < hd; ++i) want[i] += s[p] / sum * v[p * stride + i];
        std::vector<float> scores(static_cast<size_t>(n)), out(static_cast<size_t>(hd) + 1, -7.0f);
        attend_head(q.data(), k.data(), v.data(), stride, n, hd, scale, scores.data(), out.data());
        for (int i = 0; i < hd; ++i)
          ASSERT_NEAR(out[i], want[i], 2e-6) << cpu_path_name(path) << " hd=" << hd << " n=" << n << " i=" << i;
        EXPECT_EQ(out[hd], -7.0f) << "wrote past the head";
      }
    }
  }
}

// The query heads of one KV head attended together (attend_heads_kv; the AVX-512 kernel shares
// each key and value load among them and sums in its own order) against each head alone, for
// group sizes below, at and above the kernel's chunks of 4 heads, and typed caches.
TEST(Kernels, GroupedAttentionMatchesEachHeadAloneOnEveryPath) {
  RestorePath restore;
  for (CpuPath path : available_paths()) {
    set_cpu_path(path);
    for (int hd : {16, 40, 64, 128, 256}) {
      for (int group : {2, 3, 4, 5, 8, 18}) {
        for (int n : {1, 3, 4, 5, 17, 130}) {
          for (auto [kt, vt] : {std::pair{DType::F32, DType::F32}, std::pair{DType::F16, DType::Q8_0}}) {
            if ((kt == DType::Q8_0 || vt == DType::Q8_0) && hd % 32 != 0) continue;
            const int64_t row = 3 * hd;  // other KV heads between positions
            auto q = random_vector(static_cast<size_t>(group * hd), 11);
            for (auto& x : q) x *= 4.0f;
            const auto kf = random_vector(static_cast<size_t>(n * row), 12);
            const auto vf = random_vector(static_cast<size_t>(n * row), 13);
            const size_t krow = row_bytes(kt, row), vrow = row_bytes(vt, row);
            std::vector<uint8_t> kb(krow * n), vb(vrow * n);
            for (int p = 0; p < n; ++p) {
              ASSERT_TRUE(quantize_row(kt, &kf[static_cast<size_t>(p * row)], kb.data() + p * krow, row));
              ASSERT_TRUE(quantize_row(vt, &vf[static_cast<size_t>(p * row)], vb.data() + p * vrow, row));
            }
            const KvSlice keys{kb.data(), kt, static_cast<int64_t>(krow)};
            const KvSlice values{vb.data(), vt, static_cast<int64_t>(vrow)};
            const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
            std::vector<float> scores(static_cast<size_t>(group * n));
            std::vector<float> out(static_cast<size_t>(group * hd) + 1, -7.0f);
            attend_heads_kv(q.data(), keys, values, group, n, hd, scale, scores.data(), out.data());
            EXPECT_EQ(out[static_cast<size_t>(group * hd)], -7.0f) << "wrote past the group";
            for (int g = 0; g < group; ++g) {
              std::vector<float> alone(static_cast<size_t>(hd));
              attend_head_kv(q.data() + g * hd, keys, values, n, hd, scale, scores.data(), alone.data());
              for (int i = 0; i < hd; ++i)
                ASSERT_NEAR(out[static_cast<size_t>(g * hd + i)], alone[static_cast<size_t>(i)], 2e-6)
                    << cpu_path_name(path) << " hd=" << hd << " group=" << group << " n=" << n << " head " << g
                    << " " << dtype_name(kt) << "/" << dtype_name(vt);
            }
          }
        }
      }
    }
  }
}

TEST(Kernels, MatmulF32AndF16MatchReferenceOnEveryPath) {
  RestorePath restore;
  ThreadPool pool(2);
  const int64_t rows = 37, cols = 96, T = 5;
  auto w = random_vector(rows * cols, 3), x = random_vector(T * cols, 4);
  std::vector<uint16_t> w16(w.size());
  for (size_t i = 0; i < w.size(); ++i) w16[i] = fp32_to_fp16(w[i]);
  for (CpuPath path : available_paths()) {
    set_cpu_path(path);
    for (DType type : {DType::F32, DType::F16}) {
      const TensorView view =
          matrix_view(type, type == DType::F32 ? static_cast<const void*>(w.data()) : w16.data(), rows, cols);
      std::vector<float> y(T * rows);
      matmul(view, x.data(), T, y.data(), pool);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t r = 0; r < rows; ++r) {
          double want = 0;
          for (int64_t c = 0; c < cols; ++c) {
            float wv = type == DType::F32 ? w[r * cols + c] : fp16_to_fp32(w16[r * cols + c]);
            want += static_cast<double>(wv) * x[t * cols + c];
          }
          ASSERT_NEAR(y[t * rows + r], want, 1e-4) << cpu_path_name(path) << " " << dtype_name(type);
        }
    }
  }
}

TEST(Kernels, RmsnormSoftmaxSwiglu) {
  auto x = random_vector(67, 5), w = random_vector(67, 6);
  std::vector<float> out(67);
  rmsnorm(out.data(), x.data(), w.data(), 67, 1e-5f);
  double ss = 0;
  for (float v : x) ss += double(v) * v;
  double scale = 1.0 / std::sqrt(ss / 67 + 1e-5);
  for (int i = 0; i < 67; ++i) EXPECT_NEAR(out[i], x[i] * scale * w[i], 1e-5);

  std::vector<float> s = {1.0f, 2.0f, 3.0f, -1000.0f};
  softmax(s.data(), 4);
  double z = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  EXPECT_NEAR(s[0], std::exp(1.0) / z, 1e-6);
  EXPECT_NEAR(s[2], std::exp(3.0) / z, 1e-6);
  EXPECT_EQ(s[3], 0.0f);

  std::vector<float> g = {-2.0f, 0.0f, 3.0f}, u = {1.0f, 5.0f, 2.0f};
  swiglu(g.data(), u.data(), 3);
  EXPECT_NEAR(g[0], -2.0 / (1 + std::exp(2.0)), 1e-6);
  EXPECT_EQ(g[1], 0.0f);
  EXPECT_NEAR(g[2], 3.0 / (1 + std::exp(-3.0)) * 2.0, 1e-5);
}

TEST(Kernels, RopeRotatesPairsAndLeavesTheRest) {
  // One head of 8 dims, 6 rotated: pairs (0,1), (2,3), (4,5) turn; 6 and 7 stay.
  std::vector<float> x = {1, 0, 1, 0, 1, 0, 7, 9};
  rope(x.data(), 1, 8, 6, 3, 10000.0f);
  for (int i = 0; i < 6; i += 2) {
    double angle = 3 * std::pow(10000.0, -double(i) / 6);
    EXPECT_NEAR(x[i], std::cos(angle), 1e-6);
    EXPECT_NEAR(x[i + 1], std::sin(angle), 1e-6);
  }
  EXPECT_EQ(x[6], 7.0f);
  EXPECT_EQ(x[7], 9.0f);
}

TEST(ThreadPool, CoversEveryIndexOnceForAnySize) {
  ThreadPool pool(3);
  for (int64_t n : {1, 2, 3, 4, 10, 1001}) {
    std::vector<int> hits(static_cast<size_t>(n), 0);
    pool.parallel_for(n, [&](int64_t b, int64_t e, int) {
      for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
    });
    for (int h : hits) ASSERT_EQ(h, 1);
  }
}

}  // namespace
}  // namespace skiff

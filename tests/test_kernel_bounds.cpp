// Kernels touch only their operands' bytes. Every operand is placed against an inaccessible
// page, once ending at it and once starting after it, so a read or write one byte outside
// faults (the test process dies) in every build, on every CPU path this machine has, and the
// results must equal those from ordinary buffers bit for bit.
//
// This is what checks the AVX-512 kernel files for out-of-bounds accesses: the sanitizer build
// compiles them without AddressSanitizer's instrumentation (it checks every lane of a masked
// load one by one, which made the tests that run models 3x slower); UBSan still covers them.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <random>
#include <vector>

#include "base/thread_pool.h"
#include "kernels/attention.h"
#include "kernels/cpu.h"
#include "kernels/dot.h"
#include "kernels/matmul.h"
#include "kernels/matmul_impl.h"
#include "kernels/ops.h"
#include "kernels/repack.h"
#include "kernel_test_util.h"
#include "tensor/dtype.h"

namespace skiff {
namespace {

using test::available_paths;
using test::make_matrix;
using test::Matrix;
using test::random_vector;
using test::RestorePath;

enum class Edge { End, Start };

// n bytes that end exactly at (Edge::End) or start right after (Edge::Start) a PROT_NONE page.
class GuardedBytes {
 public:
  GuardedBytes(size_t n, Edge edge) : n_(n) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t body = (n + page - 1) / page * page;
    span_ = body + 2 * page;
    void* p = mmap(nullptr, span_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap failed");
    base_ = static_cast<uint8_t*>(p);
    mprotect(base_, page, PROT_NONE);
    mprotect(base_ + page + body, page, PROT_NONE);
    data_ = edge == Edge::Start ? base_ + page : base_ + page + body - n;
  }
  GuardedBytes(const GuardedBytes&) = delete;
  GuardedBytes& operator=(const GuardedBytes&) = delete;
  ~GuardedBytes() { munmap(base_, span_); }

  uint8_t* data() { return data_; }
  float* floats() { return reinterpret_cast<float*>(data_); }
  size_t size() const { return n_; }

 private:
  uint8_t* base_ = nullptr;
  uint8_t* data_ = nullptr;
  size_t n_ = 0, span_ = 0;
};

// A guarded copy of `src`.
template <class T>
std::unique_ptr<GuardedBytes> guarded_copy(const T* src, size_t count, Edge edge) {
  auto g = std::make_unique<GuardedBytes>(count * sizeof(T), edge);
  std::memcpy(g->data(), src, count * sizeof(T));
  return g;
}

bool same_bits(const float* a, const float* b, size_t n) {
  return std::memcmp(a, b, n * sizeof(float)) == 0;
}

const Edge kEdges[] = {Edge::End, Edge::Start};

TEST(KernelBounds, MatmulReadsOnlyItsWeightsAndInputsAndWritesOnlyItsOutput) {
  RestorePath restore;
  ThreadPool pool(2);
  struct Case {
    DType type;
    int64_t cols;
  };
  // Row tails that are not whole steps (float 16, bf16 32, 8-bit pairs of blocks 64), and
  // an odd row count (a partial row tile, a partial packed group of 16).
  const Case cases[] = {{DType::F32, 67},   {DType::F16, 67},   {DType::BF16, 67},
                        {DType::BF16, 96},  {DType::Q8_0, 96},  {DType::Q4_0, 160},
                        {DType::Q4_1, 96},  {DType::Q5_0, 96},  {DType::Q5_1, 96},
                        {DType::Q4_K, 768}, {DType::Q6_K, 768}, {DType::Q5_K, 256}};
  const int64_t rows = 37;
  for (const Case& c : cases) {
    const Matrix m = make_matrix(c.type, rows, c.cols, 5);
    const std::vector<uint8_t>& bytes = m.bytes;
    const TensorView& plain = m.view;
    for (CpuPath path : available_paths()) {
      set_cpu_path(path);
      size_t packed_size = 0;
      PackedBytes packed = packing_helps(plain) ? pack_matrix(plain, &packed_size) : PackedBytes{};
      // The row-major kernel, and the packed one where the path has it.
      for (bool use_packed : {false, true}) {
        if (use_packed && !packed) continue;
        // 1: decode; 3, 5, 8: one position tile (verification; packed F16 has three shapes
        // for it); 13: several position tiles.
        for (int64_t T : {int64_t{1}, int64_t{3}, int64_t{5}, int64_t{8}, int64_t{13}}) {
          const std::vector<float> x = random_vector(static_cast<size_t>(T * c.cols), 7);
          TensorView normal = plain;
          normal.packed = use_packed ? packed.get() : nullptr;
          std::vector<float> want(static_cast<size_t>(T * rows));
          matmul(normal, x.data(), T, want.data(), pool);
          for (Edge edge : kEdges) {
            auto gw = guarded_copy(bytes.data(), bytes.size(), edge);
            auto gx = guarded_copy(x.data(), x.size(), edge);
            GuardedBytes gy(want.size() * sizeof(float), edge);
            std::unique_ptr<GuardedBytes> gp =
                use_packed ? guarded_copy(packed.get(), packed_size, edge) : nullptr;
            TensorView v = plain;
            v.data = gw->data();
            v.packed = gp ? gp->data() : nullptr;
            matmul(v, gx->floats(), T, gy.floats(), pool);
            EXPECT_TRUE(same_bits(gy.floats(), want.data(), want.size()))
                << dtype_name(c.type) << " " << cpu_path_name(path) << " T " << T
                << (use_packed ? " packed" : "");
          }
        }
      }
    }
  }
}

TEST(KernelBounds, InputPreparationWritesOnlyItsStride) {
  RestorePath restore;
  using kernels::InputFormat;
  for (CpuPath path : available_paths()) {
    set_cpu_path(path);
    for (int f = 0; f < kernels::kInputFormats; ++f) {
      const auto format = static_cast<InputFormat>(f);
      const int64_t block = kernels::input_block(format);
      for (int64_t cols : {int64_t{67}, int64_t{96}, int64_t{768}}) {
        if (block != 0 && cols % block != 0) continue;
        if (format == InputFormat::F32 || format == InputFormat::BF16 ? false : cols % 32 != 0)
          continue;
        const std::vector<float> x = random_vector(static_cast<size_t>(cols), 9);
        const size_t stride = kernels::input_stride(format, cols);
        std::vector<uint8_t> want(stride);
        kernels::prepare_input(format, x.data(), cols, want.data());
        for (Edge edge : kEdges) {
          auto gx = guarded_copy(x.data(), x.size(), edge);
          GuardedBytes out(stride, edge);
          std::memset(out.data(), 0, stride);
          kernels::prepare_input(format, gx->floats(), cols, out.data());
          // Bytes past the prepared values are padding, whatever their content.
          EXPECT_EQ(std::memcmp(out.data(), want.data(), stride), 0)
              << "format " << f << " " << cpu_path_name(path) << " cols " << cols;
        }
      }
    }
  }
}

TEST(KernelBounds, AttentionReadsOnlyItsKeysValuesAndScratch) {
  RestorePath restore;
  const int hd = 64, n = 19;
  const int64_t stride = 3 * hd;  // other heads' slices between positions
  const float scale = 0.125f;
  const std::vector<float> q = random_vector(hd, 1);
  // The last position's slice ends where the buffer ends.
  const size_t kv_floats = static_cast<size_t>((n - 1) * stride + hd);
  const std::vector<float> keys = random_vector(kv_floats, 2), values = random_vector(kv_floats, 3);
  for (CpuPath path : available_paths()) {
    set_cpu_path(path);
    std::vector<float> scores(n), want(hd);
    attend_head(q.data(), keys.data(), values.data(), stride, n, hd, scale, scores.data(),
                want.data());
    for (Edge edge : kEdges) {
      auto gq = guarded_copy(q.data(), q.size(), edge);
      auto gk = guarded_copy(keys.data(), keys.size(), edge);
      auto gv = guarded_copy(values.data(), values.size(), edge);
      GuardedBytes gs(n * sizeof(float), edge), go(hd * sizeof(float), edge);
      attend_head(gq->floats(), gk->floats(), gv->floats(), stride, n, hd, scale, gs.floats(),
                  go.floats());
      EXPECT_TRUE(same_bits(go.floats(), want.data(), hd)) << cpu_path_name(path);
    }
    // Typed caches: F16 and Q8_0 rows (the slice of one head starts on a block).
    for (DType type : {DType::F16, DType::Q8_0}) {
      const size_t rb = row_bytes(type, hd), kv_stride = 3 * rb;
      const size_t kv_bytes = (n - 1) * kv_stride + rb;
      std::vector<uint8_t> k8(kv_bytes), v8(kv_bytes);
      for (int p = 0; p < n; ++p) {
        ASSERT_TRUE(quantize_row(type, &keys[static_cast<size_t>(p * stride)],
                                 k8.data() + p * kv_stride, hd));
        ASSERT_TRUE(quantize_row(type, &values[static_cast<size_t>(p * stride)],
                                 v8.data() + p * kv_stride, hd));
      }
      std::vector<float> typed_want(hd);
      attend_head_kv(q.data(), KvSlice{k8.data(), type, static_cast<int64_t>(kv_stride)},
                     KvSlice{v8.data(), type, static_cast<int64_t>(kv_stride)}, n, hd, scale,
                     scores.data(), typed_want.data());
      for (Edge edge : kEdges) {
        auto gq = guarded_copy(q.data(), q.size(), edge);
        auto gk = guarded_copy(k8.data(), k8.size(), edge);
        auto gv = guarded_copy(v8.data(), v8.size(), edge);
        GuardedBytes gs(n * sizeof(float), edge), go(hd * sizeof(float), edge);
        attend_head_kv(gq->floats(), KvSlice{gk->data(), type, static_cast<int64_t>(kv_stride)},
                       KvSlice{gv->data(), type, static_cast<int64_t>(kv_stride)}, n, hd, scale,
                       gs.floats(), go.floats());
        EXPECT_TRUE(same_bits(go.floats(), typed_want.data(), hd))
            << dtype_name(type) << " " << cpu_path_name(path);
      }
    }
    // A group of query heads sharing the KV head (the grouped kernel): 5 heads, scores 5 x n.
    const int group = 5;
    const std::vector<float> qs = random_vector(static_cast<size_t>(group * hd), 4);
    auto f32_slice = [&](const float* data) {
      return KvSlice{reinterpret_cast<const uint8_t*>(data), DType::F32, stride * 4};
    };
    std::vector<float> group_scores(static_cast<size_t>(group * n)), group_want(static_cast<size_t>(group * hd));
    attend_heads_kv(qs.data(), f32_slice(keys.data()), f32_slice(values.data()), group, n, hd, scale,
                    group_scores.data(), group_want.data());
    for (Edge edge : kEdges) {
      auto gq = guarded_copy(qs.data(), qs.size(), edge);
      auto gk = guarded_copy(keys.data(), keys.size(), edge);
      auto gv = guarded_copy(values.data(), values.size(), edge);
      GuardedBytes gs(group * n * sizeof(float), edge), go(group * hd * sizeof(float), edge);
      attend_heads_kv(gq->floats(), f32_slice(gk->floats()), f32_slice(gv->floats()), group, n, hd, scale,
                      gs.floats(), go.floats());
      EXPECT_TRUE(same_bits(go.floats(), group_want.data(), group_want.size()))
          << "group of " << group << " " << cpu_path_name(path);
    }
  }
}

TEST(KernelBounds, VectorKernelsTouchOnlyTheirLength) {
  RestorePath restore;
  for (CpuPath path : available_paths()) {
    set_cpu_path(path);
    for (int64_t n : {int64_t{1}, int64_t{15}, int64_t{17}, int64_t{67}}) {
      const std::vector<float> a = random_vector(static_cast<size_t>(n), 4),
                               b = random_vector(static_cast<size_t>(n), 5);
      const float want_dot = dot_f32(a.data(), b.data(), n);
      std::vector<float> want_axpy = b;
      axpy_f32(0.5f, a.data(), want_axpy.data(), n);
      std::vector<float> want_swiglu = a, want_exp(static_cast<size_t>(n));
      swiglu(want_swiglu.data(), b.data(), n);
      exp_f32(a.data(), want_exp.data(), n);
      for (Edge edge : kEdges) {
        auto ga = guarded_copy(a.data(), a.size(), edge);
        auto gb = guarded_copy(b.data(), b.size(), edge);
        EXPECT_EQ(dot_f32(ga->floats(), gb->floats(), n), want_dot) << cpu_path_name(path);
        axpy_f32(0.5f, ga->floats(), gb->floats(), n);
        EXPECT_TRUE(same_bits(gb->floats(), want_axpy.data(), static_cast<size_t>(n)))
            << cpu_path_name(path);
        auto gg = guarded_copy(a.data(), a.size(), edge);
        auto gu = guarded_copy(b.data(), b.size(), edge);
        swiglu(gg->floats(), gu->floats(), n);
        EXPECT_TRUE(same_bits(gg->floats(), want_swiglu.data(), static_cast<size_t>(n)))
            << cpu_path_name(path);
        GuardedBytes ge(static_cast<size_t>(n) * sizeof(float), edge);
        exp_f32(ga->floats(), ge.floats(), n);
        EXPECT_TRUE(same_bits(ge.floats(), want_exp.data(), static_cast<size_t>(n)))
            << cpu_path_name(path);
      }
    }
  }
}

}  // namespace
}  // namespace skiff

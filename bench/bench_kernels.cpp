// Google Benchmark micro-benchmarks for the kernels: matmul for every weight type on every
// CPU path this machine has, for decode (T = 1: bytes/s of weights) and prefill (T = 128:
// multiply-adds/s); dot, RMSNorm, attention of one head, SwiGLU. Not run by the tests: build-perf/skiff_microbench [--benchmark_filter=...].
#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <random>
#include <vector>

#include "base/thread_pool.h"
#include "bench/system.h"
#include "kernels/attention.h"
#include "kernels/cpu.h"
#include "kernels/dot.h"
#include "kernels/matmul.h"
#include "kernels/matmul_impl.h"
#include "kernels/ops.h"
#include "kernels/repack.h"
#include "model/kv_cache.h"

namespace skiff {
namespace {

struct Weights {
  TensorView view;
  std::vector<uint8_t> bytes;
};

Weights make_weights(DType type, int64_t rows, int64_t cols) {
  std::mt19937 rng(7);
  std::normal_distribution<float> n(0.0f, 0.02f);
  Weights w;
  const size_t rb = row_bytes(type, cols);
  w.bytes.resize(rb * static_cast<size_t>(rows));
  std::vector<float> row(static_cast<size_t>(cols));
  // Past 4096 rows the rows repeat: the values do not change the speed, and drawing a
  // DRAM-sized matrix (256M values) took longer than its benchmark.
  constexpr int64_t kDistinctRows = 4096;
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* dst = w.bytes.data() + rb * static_cast<size_t>(r);
    if (r >= kDistinctRows) {
      std::copy_n(w.bytes.data() + rb * static_cast<size_t>(r % kDistinctRows), rb, dst);
      continue;
    }
    for (auto& v : row) v = n(rng);
    quantize_row(type, row.data(), dst, cols);
  }
  w.view = matrix_view(type, w.bytes.data(), rows, cols);
  return w;
}

// Forces `path` for one benchmark and restores the best path after; false (and the
// benchmark skipped) when this CPU lacks it.
bool use_path(benchmark::State& state, CpuPath path) {
  if (path > best_cpu_path()) {
    state.SkipWithError("CPU path not available");
    return false;
  }
  set_cpu_path(path);
  state.SetLabel(std::string(cpu_path_name(path)));
  return true;
}
struct RestoreBestPath {
  ~RestoreBestPath() { set_cpu_path(best_cpu_path()); }
};

// args: type, path, T, threads, rows, cols (the FFN up projection of the reference shape;
// --benchmark_filter picks, or add Args for other shapes).
void BM_Matmul(benchmark::State& state) {
  const auto type = static_cast<DType>(state.range(0));
  const auto path = static_cast<CpuPath>(state.range(1));
  const int64_t T = state.range(2);
  RestoreBestPath restore;
  if (!use_path(state, path)) return;
  const int64_t rows = state.range(4), cols = state.range(5);
  Weights w = make_weights(type, rows, cols);
  std::vector<float> x(static_cast<size_t>(T * cols), 0.5f), y(static_cast<size_t>(T * rows));
  ThreadPool pool(static_cast<int>(state.range(3)));
  for (auto _ : state) {
    matmul(w.view, x.data(), T, y.data(), pool);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetLabel(std::string(dtype_name(type)) + " " + std::string(cpu_path_name(path)));
  state.counters["weights_GBps"] = benchmark::Counter(static_cast<double>(w.bytes.size()),
                                                      benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GMACs"] = benchmark::Counter(static_cast<double>(rows * cols * T) / 1e9,
                                               benchmark::Counter::kIsIterationInvariantRate);
}

void MatmulArgs(benchmark::internal::Benchmark* b) {
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q6_K})
    for (CpuPath p : {CpuPath::Scalar, CpuPath::Avx2, CpuPath::Avx512})
      for (int64_t T : {1, 128})
        for (int64_t threads : {1, 2}) {
          if (p == CpuPath::Scalar && T > 1) continue;  // the reference is too slow to matter
          b->Args({static_cast<int64_t>(t), static_cast<int64_t>(p), T, threads, 5632, 2048});
        }
}
BENCHMARK(BM_Matmul)->Apply(MatmulArgs)->Unit(benchmark::kMicrosecond)->UseRealTime();

// Prefill of the other reference shapes, one and two threads: attention (2048 x 2048), FFN down
// (2048 x 5632), a short row (512) whose position tile fits in L1, and a matrix far larger
// than the caches (32768 x 2048), as the model's weights are.
void PrefillShapeArgs(benchmark::internal::Benchmark* b) {
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q6_K})
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{2048, 2048}, {2048, 5632}, {8192, 512}, {32768, 2048}})
      for (int64_t threads : {1, 2}) b->Args({static_cast<int64_t>(t), static_cast<int64_t>(best_cpu_path()), 128, threads, rows, cols});
}
BENCHMARK(BM_Matmul)->Name("BM_MatmulPrefill")->Apply(PrefillShapeArgs)->Unit(benchmark::kMicrosecond)->UseRealTime();

// Decode from DRAM: a matrix far larger than the caches (the shape above fits in L3).
void MatmulDramArgs(benchmark::internal::Benchmark* b) {
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q6_K})
    for (int64_t threads : {1, 2})
      b->Args({static_cast<int64_t>(t), static_cast<int64_t>(best_cpu_path()), 1, threads, 131072, 2048});
}
BENCHMARK(BM_Matmul)->Name("BM_MatmulDram")->Apply(MatmulDramArgs)->Unit(benchmark::kMicrosecond)->UseRealTime();

// The ceiling for BM_MatmulDram: a plain streaming read (as `skiff bench --membw`) of a buffer
// as large, each thread summing its contiguous share. Machines of this kind swing between 27
// and 77 GB/s, so compare it with the matmuls in the same run, interleaved:
//   skiff_microbench --benchmark_filter='BM_StreamRead|BM_MatmulDram/(0|1)/2/1/2/'
//       --benchmark_repetitions=5 --benchmark_enable_random_interleaving=true
void BM_StreamRead(benchmark::State& state) {
  const int64_t n = state.range(1) / static_cast<int64_t>(sizeof(float));
  std::vector<float> buf(static_cast<size_t>(n), 1.0f);
  ThreadPool pool(static_cast<int>(state.range(0)));
  std::vector<float> sums(static_cast<size_t>(pool.size()));
  const bool simd = active_cpu_path() == CpuPath::Avx512;
  for (auto _ : state) {
    pool.parallel_for(n, [&](int64_t b, int64_t e, int thread) {
      sums[static_cast<size_t>(thread)] = simd ? kernels::stream_sum_avx512(buf.data() + b, e - b)
                                               : kernels::stream_sum_scalar(buf.data() + b, e - b);
    });
    benchmark::DoNotOptimize(sums.data());
  }
  state.counters["GBps"] = benchmark::Counter(static_cast<double>(n) * sizeof(float),
                                              benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_StreamRead)->Args({1, int64_t{1} << 30})->Args({2, int64_t{1} << 30})->Unit(benchmark::kMicrosecond)->UseRealTime();

// The arithmetic peak of one core, against which the prefill tiles are judged: 12 independent
// chains of 512-bit fmadd (16 multiply-adds each) or vdpbf16ps (32), so neither latency nor
// memory limits them. Counter: G multiply-adds/s.
void BM_ArithmeticPeak(benchmark::State& state) {
  const int bf16 = static_cast<int>(state.range(0));
  if (best_cpu_path() < CpuPath::Avx512 || (bf16 && !cpu_has_avx512_bf16())) {
    state.SkipWithError("needs AVX-512 (and AVX512-BF16 for vdpbf16ps)");
    return;
  }
  constexpr int64_t kSteps = 1 << 20;
  for (auto _ : state) benchmark::DoNotOptimize(kernels::multiply_add_chains_avx512(kSteps, bf16 != 0));
  state.SetLabel(bf16 ? "vdpbf16ps" : "vfmadd ps");
  state.counters["GMACs"] = benchmark::Counter(static_cast<double>(kSteps) * 12 * (bf16 ? 32 : 16) / 1e9,
                                               benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_ArithmeticPeak)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime();

// Q4_0 / Q8_0 / F16 / BF16 row-major against packed (kernels/repack.h) on the best path, for
// the few positions of continuous batching and verification, and for prefill. args: type,
// packed, T, threads, rows, cols.
void BM_MatmulPacked(benchmark::State& state) {
  const auto type = static_cast<DType>(state.range(0));
  const bool packed = state.range(1) != 0;
  const int64_t T = state.range(2), rows = state.range(4), cols = state.range(5);
  Weights w = make_weights(type, rows, cols);
  PackedBytes copy;
  if (packed && packing_helps(w.view)) {
    copy = pack_matrix(w.view);
    w.view.packed = copy.get();
  }
  std::vector<float> x(static_cast<size_t>(T * cols), 0.5f), y(static_cast<size_t>(T * rows));
  ThreadPool pool(static_cast<int>(state.range(3)));
  for (auto _ : state) {
    matmul(w.view, x.data(), T, y.data(), pool);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetLabel(std::string(dtype_name(type)) + (w.view.packed != nullptr ? " packed" : ""));
  state.counters["weights_GBps"] = benchmark::Counter(static_cast<double>(w.bytes.size()),
                                                      benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GMACs"] = benchmark::Counter(static_cast<double>(rows * cols * T) / 1e9,
                                               benchmark::Counter::kIsIterationInvariantRate);
}
void MatmulPackedArgs(benchmark::internal::Benchmark* b) {
  for (DType t : {DType::Q4_0, DType::Q8_0, DType::F16, DType::BF16}) {
    const auto type = static_cast<int64_t>(t);
    for (int64_t T : {1, 2, 4, 5, 8, 128})
      for (int64_t packed : {0, 1}) b->Args({type, packed, T, 1, 5632, 2048});
    for (int64_t packed : {0, 1}) b->Args({type, packed, 1, 2, 131072, 2048});  // decode from DRAM
    // Verification of D + 1 positions from DRAM (self-speculation): bytes/s against T = 1.
    for (int64_t T : {2, 3, 4, 5, 6, 8}) b->Args({type, 1, T, 2, 131072, 2048});
  }
}
BENCHMARK(BM_MatmulPacked)->Apply(MatmulPackedArgs)->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_Dot(benchmark::State& state) {
  const auto path = static_cast<CpuPath>(state.range(0));
  RestoreBestPath restore;
  if (!use_path(state, path)) return;
  std::vector<float> a(4096, 1.0f), b(4096, 0.5f);
  for (auto _ : state) benchmark::DoNotOptimize(dot_f32(a.data(), b.data(), 4096));
}
BENCHMARK(BM_Dot)->Arg(0)->Arg(1)->Arg(2);

void BM_Rmsnorm(benchmark::State& state) {
  std::vector<float> x(2048, 0.3f), w(2048, 1.0f), out(2048);
  for (auto _ : state) {
    rmsnorm(out.data(), x.data(), w.data(), 2048, 1e-5f);
    benchmark::DoNotOptimize(out.data());
  }
}
BENCHMARK(BM_Rmsnorm);

// args: path, positions attended. One head of the reference shape (head_dim 64, KV rows of
// 512 floats).
void BM_AttendHead(benchmark::State& state) {
  const auto path = static_cast<CpuPath>(state.range(0));
  RestoreBestPath restore;
  if (!use_path(state, path)) return;
  const int n = static_cast<int>(state.range(1)), hd = 64, stride = 512;
  std::vector<float> q(hd, 0.1f), kv(static_cast<size_t>(n) * stride, 0.2f), scores(static_cast<size_t>(n)), out(hd);
  for (auto _ : state) {
    attend_head(q.data(), kv.data(), kv.data(), stride, n, hd, 0.125f, scores.data(), out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["positions_per_s"] = benchmark::Counter(n, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_AttendHead)->ArgsProduct({{0, 1, 2}, {128, 2048}});

// args: path, KV cache type (0 F32, 1 F16, 2 Q8_0), positions. One decode step of one layer of
// the reference shape over a cache of that type: 32 query heads on 8 KV heads of 64.
void BM_AttendLayerKv(benchmark::State& state) {
  const auto path = static_cast<CpuPath>(state.range(0));
  RestoreBestPath restore;
  if (!use_path(state, path)) return;
  const DType type = std::array{DType::F32, DType::F16, DType::Q8_0}[static_cast<size_t>(state.range(1))];
  const int n = static_cast<int>(state.range(2)), hd = 64, kv_dim = 512, heads = 32, group = 4;
  KvCache cache(1, n, kv_dim, {type, type}, hd);
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> k(kv_dim), v(kv_dim), q(static_cast<size_t>(heads) * hd), out(q.size());
  for (int p = 0; p < n; ++p) {
    for (int i = 0; i < kv_dim; ++i) k[i] = normal(rng), v[i] = normal(rng);
    cache.store(0, p, k.data(), v.data());
  }
  for (auto& x : q) x = normal(rng);
  const float scale = 0.125f;
  std::vector<float> group_scores(static_cast<size_t>(group) * n);
  for (auto _ : state) {
    // As forward() runs it: the query heads of each KV head together.
    for (int kv = 0; kv < heads / group; ++kv) {
      const int off = kv * hd;
      const KvSlice keys{cache.key_row(0, 0) + row_bytes(type, off), type, static_cast<int64_t>(cache.key_row_bytes())};
      const KvSlice values{cache.value_row(0, 0) + row_bytes(type, off), type,
                           static_cast<int64_t>(cache.value_row_bytes())};
      attend_heads_kv(&q[kv * group * hd], keys, values, group, n, hd, scale, group_scores.data(), &out[kv * group * hd]);
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["positions_per_s"] = benchmark::Counter(n, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_AttendLayerKv)->ArgsProduct({{0, 1, 2}, {0, 1, 2}, {512, 4096}})->Unit(benchmark::kMicrosecond);

// args: path. SwiGLU over one prompt's FFN activations row (5632).
void BM_Swiglu(benchmark::State& state) {
  const auto path = static_cast<CpuPath>(state.range(0));
  RestoreBestPath restore;
  if (!use_path(state, path)) return;
  std::vector<float> g(5632, 0.7f), u(5632, 1.1f);
  for (auto _ : state) {
    swiglu(g.data(), u.data(), 5632);
    benchmark::DoNotOptimize(g.data());
    g.assign(g.size(), 0.7f);
  }
}
BENCHMARK(BM_Swiglu)->Arg(0)->Arg(2);

}  // namespace
}  // namespace skiff

BENCHMARK_MAIN();

#include "bench/system.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "base/thread_pool.h"
#include "kernels/cpu.h"

namespace skiff {

namespace kernels {
float stream_sum_scalar(const float* x, int64_t n) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) s0 += x[i], s1 += x[i + 1], s2 += x[i + 2], s3 += x[i + 3];
  for (; i < n; ++i) s0 += x[i];
  return (s0 + s1) + (s2 + s3);
}
}  // namespace kernels

double measure_read_bandwidth(int threads, size_t bytes, int repeats) {
  const int64_t n = static_cast<int64_t>(bytes / sizeof(float));
  std::unique_ptr<float[]> buf(new float[static_cast<size_t>(n)]);
  ThreadPool pool(threads);
  // Touch every page from the thread that will read it (first-touch placement).
  pool.parallel_for(n, [&](int64_t b, int64_t e, int) {
    std::fill(buf.get() + b, buf.get() + e, 1.0f);
  });
  const bool simd = active_cpu_path() == CpuPath::Avx512;
  double best = 0;
  std::vector<float> sums(static_cast<size_t>(pool.size()));
  for (int r = 0; r < repeats; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for(n, [&](int64_t b, int64_t e, int thread) {
      const float* p = buf.get() + b;
      sums[static_cast<size_t>(thread)] =
          simd ? kernels::stream_sum_avx512(p, e - b) : kernels::stream_sum_scalar(p, e - b);
    });
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, static_cast<double>(bytes) / s);
  }
  if (sums[0] < 0) std::puts("");  // keep the sums alive
  return best;
}

size_t resident_bytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  unsigned long size = 0, resident = 0;
  int got = std::fscanf(f, "%lu %lu", &size, &resident);
  std::fclose(f);
  return got == 2 ? resident * static_cast<size_t>(sysconf(_SC_PAGESIZE)) : 0;
}

size_t resident_bytes_of(const void* data, size_t size) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(data) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + size + page - 1) / page * page;
  std::vector<unsigned char> vec((end - begin) / page);
  if (vec.empty() || mincore(reinterpret_cast<void*>(begin), end - begin, vec.data()) != 0) return 0;
  size_t pages = 0;
  for (unsigned char v : vec) pages += v & 1;
  return pages * page;
}

}  // namespace skiff

// Helpers the kernel tests share: the CPU paths this machine can run (each test forces them in
// turn), a guard that restores the active one, and uniform random vectors.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "kernels/cpu.h"

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

}  // namespace skiff::test

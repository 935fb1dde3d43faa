// Runtime CPU dispatch. The binary is compiled for baseline x86-64; kernels built for AVX2
// and AVX-512 live in *_avx2.cpp / *_avx512.cpp and are only called when the CPU has them.
// SKIFF_CPU=scalar|avx2|avx512 forces a path (never above what the CPU supports).
#pragma once

#include <string_view>

namespace skiff {

enum class CpuPath { Scalar = 0, Avx2 = 1, Avx512 = 2 };

CpuPath best_cpu_path();      // what this CPU supports
CpuPath active_cpu_path();    // what the kernels use (best, or SKIFF_CPU / set_cpu_path)
void set_cpu_path(CpuPath p);  // clamps to best_cpu_path(); for tests and benchmarks
std::string_view cpu_path_name(CpuPath p);
bool cpu_has_avx512_bf16();  // vdpbf16ps / vcvtneps2bf16 (Zen 4, Cooper Lake, Sapphire Rapids)

}  // namespace skiff

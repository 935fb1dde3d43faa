#include "kernels/cpu.h"

#include <cstdlib>
#include <cstring>

namespace skiff {
namespace {

CpuPath detect() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("fma"))  // vpdpbusd: int8 kernels
    return CpuPath::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return CpuPath::Avx2;
#endif
  return CpuPath::Scalar;
}

CpuPath from_environment() {
  CpuPath best = best_cpu_path();
  const char* env = std::getenv("SKIFF_CPU");
  if (env == nullptr) return best;
  CpuPath wanted = best;
  if (std::strcmp(env, "scalar") == 0) wanted = CpuPath::Scalar;
  if (std::strcmp(env, "avx2") == 0) wanted = CpuPath::Avx2;
  if (std::strcmp(env, "avx512") == 0) wanted = CpuPath::Avx512;
  return wanted < best ? wanted : best;
}

CpuPath& active() {
  static CpuPath path = from_environment();
  return path;
}

}  // namespace

CpuPath best_cpu_path() {
  static const CpuPath best = detect();
  return best;
}

CpuPath active_cpu_path() { return active(); }

bool cpu_has_avx512_bf16() {
#if defined(__x86_64__)
  static const bool has = best_cpu_path() == CpuPath::Avx512 && __builtin_cpu_supports("avx512bf16");
  return has;
#else
  return false;
#endif
}

void set_cpu_path(CpuPath p) { active() = p < best_cpu_path() ? p : best_cpu_path(); }

std::string_view cpu_path_name(CpuPath p) {
  switch (p) {
    case CpuPath::Avx512: return "avx512";
    case CpuPath::Avx2: return "avx2";
    default: return "scalar";
  }
}

}  // namespace skiff

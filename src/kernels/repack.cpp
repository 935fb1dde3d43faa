#include "kernels/repack.h"

#include <cstring>
#include <new>

#include "base/error.h"
#include "kernels/cpu.h"

namespace skiff {

bool packing_helps(const TensorView& w) {
  return active_cpu_path() == CpuPath::Avx512 && w.type == DType::Q4_0 && w.cols % 32 == 0 && w.rows > 0 &&
         !w.empty();
}

PackedBytes pack_q4_0(const TensorView& w, size_t* bytes) {
  if (w.type != DType::Q4_0 || w.cols % 32 != 0) fail("{}: only Q4_0 rows of whole blocks can be packed", w.name);
  constexpr size_t kBlock = 18;  // GGUF Q4_0: fp16 d, 16 nibble bytes
  const int64_t nb = w.cols / 32;
  const int64_t groups = (w.rows + kPackedGroupRows - 1) / kPackedGroupRows;
  const size_t total = static_cast<size_t>(groups * nb) * kPackedQ4_0BlockBytes;
  auto* out = static_cast<uint8_t*>(std::aligned_alloc(64, (total + 63) / 64 * 64));
  if (out == nullptr) throw std::bad_alloc();
  PackedBytes packed(out);
  std::memset(out, 0, total);  // padding rows: d = 0, nibbles 0
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* dst = out + static_cast<size_t>(g * nb + b) * kPackedQ4_0BlockBytes;
      for (int64_t r = 0; r < kPackedGroupRows; ++r) {
        const int64_t row = g * kPackedGroupRows + r;
        if (row >= w.rows) break;
        const uint8_t* src = w.row(row) + static_cast<size_t>(b) * kBlock;
        std::memcpy(dst + 2 * r, src, 2);
        for (int i = 0; i < 4; ++i) std::memcpy(dst + 32 + 64 * i + 4 * r, src + 2 + 4 * i, 4);
      }
    }
  }
  if (bytes != nullptr) *bytes = total;
  return packed;
}

}  // namespace skiff

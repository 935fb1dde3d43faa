#include "kernels/repack.h"

#include <sys/mman.h>

#include <cstring>
#include <new>

#include "base/error.h"
#include "kernels/cpu.h"

namespace skiff {

bool packing_helps(const TensorView& w) {
  return active_cpu_path() == CpuPath::Avx512 && (w.type == DType::Q4_0 || w.type == DType::Q8_0) &&
         w.cols % 32 == 0 && w.rows > 0 && !w.empty();
}

size_t packed_bytes(const TensorView& w) {
  if ((w.type != DType::Q4_0 && w.type != DType::Q8_0) || w.cols % 32 != 0 || w.rows <= 0) return 0;
  const int64_t groups = (w.rows + kPackedGroupRows - 1) / kPackedGroupRows;
  return static_cast<size_t>(groups * (w.cols / 32)) *
         (w.type == DType::Q4_0 ? kPackedQ4_0BlockBytes : kPackedQ8_0BlockBytes);
}

PackedBytes pack_matrix(const TensorView& w, size_t* bytes) {
  const bool q4 = w.type == DType::Q4_0;
  if ((!q4 && w.type != DType::Q8_0) || w.cols % 32 != 0)
    fail("{}: only Q4_0 or Q8_0 rows of whole blocks can be packed", w.name);
  const size_t kBlock = q4 ? 18 : 34;  // GGUF: fp16 d, then 16 nibble bytes or 32 int8
  const size_t kPackedBlock = q4 ? kPackedQ4_0BlockBytes : kPackedQ8_0BlockBytes;
  const int64_t nb = w.cols / 32;
  const int64_t groups = (w.rows + kPackedGroupRows - 1) / kPackedGroupRows;
  const size_t total = packed_bytes(w);
  // Decode streams these bytes once per token: on 2 MiB pages the hardware prefetcher is not
  // stopped at every 4 KiB boundary and the TLB covers the whole matrix (transparent huge
  // pages are often "madvise" only, so ask for them).
  constexpr size_t kHugePage = size_t{2} << 20;
  const size_t align = total >= kHugePage ? kHugePage : 64;
  auto* out = static_cast<uint8_t*>(std::aligned_alloc(align, (total + align - 1) / align * align));
  if (out == nullptr) throw std::bad_alloc();
  if (align == kHugePage) madvise(out, (total + align - 1) / align * align, MADV_HUGEPAGE);  // best effort
  PackedBytes packed(out);
  std::memset(out, 0, total);  // padding rows: d = 0, nibbles 0
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* dst = out + static_cast<size_t>(g * nb + b) * kPackedBlock;
      for (int64_t r = 0; r < kPackedGroupRows; ++r) {
        const int64_t row = g * kPackedGroupRows + r;
        if (row >= w.rows) break;
        const uint8_t* src = w.row(row) + static_cast<size_t>(b) * kBlock;
        std::memcpy(dst + 2 * r, src, 2);
        if (q4) {
          for (int i = 0; i < 4; ++i) std::memcpy(dst + 32 + 64 * i + 4 * r, src + 2 + 4 * i, 4);
        } else {
          for (int i = 0; i < 32; ++i) dst[32 + 64 * (i / 4) + 4 * r + i % 4] = static_cast<uint8_t>(src[2 + i] ^ 0x80);
        }
      }
    }
  }
  if (bytes != nullptr) *bytes = total;
  return packed;
}

}  // namespace skiff

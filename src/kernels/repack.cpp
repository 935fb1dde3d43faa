#include "kernels/repack.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <new>

#include "base/error.h"
#include "kernels/cpu.h"

namespace skiff {

namespace {

bool packable(const TensorView& w) {
  if (w.rows <= 0 || w.cols <= 0) return false;
  if (packed_by_columns(w.type)) return true;
  return (w.type == DType::Q4_0 || w.type == DType::Q8_0) && w.cols % 32 == 0;
}

// Bytes on 2 MiB pages where they are that many: decode streams them once per token; on huge
// pages the hardware prefetcher is not stopped at every 4 KiB boundary and the TLB covers the
// whole matrix (transparent huge pages are often "madvise" only, so ask for them).
PackedBytes allocate_packed(size_t total, bool zero) {
  constexpr size_t kHugePage = size_t{2} << 20;
  const size_t align = total >= kHugePage ? kHugePage : 64;
  const size_t rounded = (total + align - 1) / align * align;
  auto* out = static_cast<uint8_t*>(std::aligned_alloc(align, rounded));
  if (out == nullptr) throw std::bad_alloc();
  if (align == kHugePage) madvise(out, rounded, MADV_HUGEPAGE);  // best effort
  if (zero) std::memset(out, 0, total);  // padding rows: d = 0, nibbles 0
  return PackedBytes(out);
}

// Element is uint32_t (F32) or uint16_t (F16, BF16: pairs).
template <class Element>
PackedBytes pack_columns(const TensorView& w, bool pairs, size_t* bytes) {
  const PackedColumnsLayout l = packed_columns_layout(w.rows, w.cols, w.type);
  PackedBytes packed = allocate_packed(l.bytes(), false);
  // Chunk by chunk (2-4 KiB written while 16 rows' 128-256 bytes are read): a transpose of
  // 16 x 64, every byte written (the padding as zeros).
  for (int64_t g = 0; g < l.groups; ++g) {
    const Element* src[kPackedGroupRows];
    const int64_t n_rows = std::min<int64_t>(kPackedGroupRows, w.rows - g * kPackedGroupRows);
    for (int64_t i = 0; i < n_rows; ++i) src[i] = reinterpret_cast<const Element*>(w.row(g * kPackedGroupRows + i));
    for (int64_t j = 0; j < l.chunks; ++j) {
      auto* dst = reinterpret_cast<Element*>(packed.get() + l.offset(g, j));
      const int64_t k0 = j * kPackedColumnsChunkCols, n = std::min<int64_t>(kPackedColumnsChunkCols, w.cols - k0);
      if (n_rows < kPackedGroupRows || n < kPackedColumnsChunkCols) std::memset(dst, 0, l.chunk_bytes);
      for (int64_t i = 0; i < n_rows; ++i)
        for (int64_t k = 0; k < n; ++k)
          dst[pairs ? k / 2 * 32 + 2 * i + k % 2 : k * kPackedGroupRows + i] = src[i][k0 + k];
    }
  }
  if (bytes != nullptr) *bytes = l.bytes();
  return packed;
}

}  // namespace

PackedColumnsLayout packed_columns_layout(int64_t rows, int64_t cols, DType type) {
  PackedColumnsLayout l;
  l.chunk_bytes = static_cast<size_t>(kPackedColumnsChunkCols * kPackedGroupRows) * (type == DType::F32 ? 4 : 2);
  l.rows = rows;
  l.cols = cols;
  l.chunks = (cols + kPackedColumnsChunkCols - 1) / kPackedColumnsChunkCols;
  l.groups = (rows + kPackedGroupRows - 1) / kPackedGroupRows;
  return l;
}

bool packing_helps(const TensorView& w) {
  // BF16 packed only has a vdpbf16ps kernel.
  return active_cpu_path() == CpuPath::Avx512 && packable(w) && !w.empty() &&
         (w.type != DType::BF16 || cpu_has_avx512_bf16());
}

size_t packed_bytes(const TensorView& w) {
  if (!packable(w)) return 0;
  if (packed_by_columns(w.type)) return packed_columns_layout(w.rows, w.cols, w.type).bytes();
  const int64_t groups = (w.rows + kPackedGroupRows - 1) / kPackedGroupRows;
  return static_cast<size_t>(groups * (w.cols / 32)) *
         (w.type == DType::Q4_0 ? kPackedQ4_0BlockBytes : kPackedQ8_0BlockBytes);
}

PackedBytes pack_matrix(const TensorView& w, size_t* bytes) {
  if (!packable(w)) fail("{}: only F32, F16, BF16, or Q4_0 or Q8_0 rows of whole blocks, can be packed", w.name);
  if (w.type == DType::F32) return pack_columns<uint32_t>(w, false, bytes);
  if (w.type == DType::F16 || w.type == DType::BF16) return pack_columns<uint16_t>(w, w.type == DType::BF16, bytes);
  const bool q4 = w.type == DType::Q4_0;
  const size_t kBlock = q4 ? 18 : 34;  // GGUF: fp16 d, then 16 nibble bytes or 32 int8
  const size_t kPackedBlock = q4 ? kPackedQ4_0BlockBytes : kPackedQ8_0BlockBytes;
  const int64_t nb = w.cols / 32;
  const int64_t groups = (w.rows + kPackedGroupRows - 1) / kPackedGroupRows;
  const size_t total = packed_bytes(w);
  PackedBytes packed = allocate_packed(total, true);
  uint8_t* out = packed.get();
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

// Weights rearranged once, at load, for a kernel that reads them faster than the file's own
// layout allows. Today, on the AVX-512 path:
// - Q4_0 and Q8_0, interleaved in groups of 16 rows so that one 32-bit lane of a vector holds
//   4 bytes of one row; a vpdpbusd then advances 16 output rows at once and each block's scale
//   is applied once per 16 outputs instead of once per 16 partial sums of one output (see
//   matmul_packed_avx512.cpp);
// - F32, F16 and BF16, column by column in groups of 16 rows, so that one load is one column
//   (BF16: two) of 16 rows and a product is an outer product: 16 rows x one broadcast input per
//   vfmadd (BF16: an input pair per vdpbf16ps), for G groups x C positions one load (F16: and
//   one conversion) per C of them instead of one per 6, and no horizontal sums at the end of a
//   dot product, which cost most where rows are short (a 192-wide model: 12 vectors per row)
//   (matmul_packed_columns_avx512.cpp).
//
// Layout of a packed matrix: groups of 16 rows (the last padded with zero rows), each group
// its blocks of 32 in order, each (group, block) 16 fp16 scales (row 0 .. 15), then chunks
// of 64 bytes whose 4-byte lane r holds 4 bytes of row r:
//   Q4_0 (288 bytes): 4 chunks; chunk i holds bytes 4i .. 4i+3 of the row's 16 nibble bytes
//     (low nibbles: elements 4i .. 4i+3, high nibbles: elements 16+4i .. 16+4i+3);
//   Q8_0 (544 bytes): 8 chunks; chunk k holds elements 4k .. 4k+3 as unsigned bytes w + 128.
// F32, F16 and BF16: columns padded with zeros to a multiple of 64 (Kp), rows to a multiple of
// 16. Groups go in super-groups of up to 8 (128 rows; the last may have fewer, ng); a
// super-group holds its chunks of 64 columns in order, each chunk the ng groups' 64 columns x
// 16 rows (2 KiB per group, F32 4 KiB; element (row 16g + i, column 64j + k) at byte 32k + 2i
// for F16, 64k + 4i for F32, and for BF16 by column pairs, 64 (k / 2) + 4i + 2 (k % 2), as
// vdpbf16ps takes them). So a decode step over a super-group reads one contiguous 16 KiB
// (F32 32 KiB) chunk after another, as the row-major kernels read an 8-row tile. Super-group s
// starts at s * 8 * Kp * (bytes of a group's column).
// The original view stays valid (embedding lookups, other CPU paths read it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "tensor/tensor.h"

namespace skiff {

constexpr int64_t kPackedGroupRows = 16;
constexpr size_t kPackedQ4_0BlockBytes = 288;
constexpr size_t kPackedQ8_0BlockBytes = 544;
constexpr int64_t kPackedColumnsChunkCols = 64;
constexpr int64_t kPackedColumnsSuperGroup = 8;  // groups
constexpr size_t kPackedColumnsChunkBytes = kPackedColumnsChunkCols * kPackedGroupRows * 2;  // F16, BF16

// Where group g's chunk j (64 columns x 16 rows) of an F32, F16 or BF16 matrix of `cols`
// columns and `rows` rows lies in its packed bytes; consecutive chunks of a group are
// `chunk_stride(g)` bytes apart.
struct PackedColumnsLayout {
  int64_t rows = 0, cols = 0;
  int64_t chunks = 0;  // Kp / 64
  int64_t groups = 0;
  size_t chunk_bytes = kPackedColumnsChunkBytes;  // one group's chunk (F32: twice the 2 KiB)
  int64_t super_group_groups(int64_t g) const {  // ng of g's super-group
    const int64_t first = g / kPackedColumnsSuperGroup * kPackedColumnsSuperGroup;
    return groups - first < kPackedColumnsSuperGroup ? groups - first : kPackedColumnsSuperGroup;
  }
  size_t chunk_stride(int64_t g) const { return static_cast<size_t>(super_group_groups(g)) * chunk_bytes; }
  size_t offset(int64_t g, int64_t j) const {
    const int64_t s = g / kPackedColumnsSuperGroup;
    return static_cast<size_t>(s * kPackedColumnsSuperGroup * chunks) * chunk_bytes +
           static_cast<size_t>(j) * chunk_stride(g) + static_cast<size_t>(g % kPackedColumnsSuperGroup) * chunk_bytes;
  }
  size_t bytes() const { return static_cast<size_t>(groups * chunks) * chunk_bytes; }
};
// True for the types packed column by column (F32, F16, BF16).
constexpr bool packed_by_columns(DType type) {
  return type == DType::F32 || type == DType::F16 || type == DType::BF16;
}
// `type`: one packed_by_columns.
PackedColumnsLayout packed_columns_layout(int64_t rows, int64_t cols, DType type);

struct FreeBytes {
  void operator()(uint8_t* p) const { std::free(p); }
};
using PackedBytes = std::unique_ptr<uint8_t[], FreeBytes>;

// True when the active CPU path has a kernel for `w` packed (AVX-512: Q4_0, Q8_0, F32, F16, and
// BF16 with AVX512-BF16).
bool packing_helps(const TensorView& w);

// Bytes pack_matrix allocates for w (0 when w cannot be packed).
size_t packed_bytes(const TensorView& w);

// w's weights in the packed layout (64-byte aligned); w must be F32, F16 or BF16, or Q4_0 or
// Q8_0 with cols % 32 == 0.
PackedBytes pack_matrix(const TensorView& w, size_t* bytes = nullptr);

}  // namespace skiff

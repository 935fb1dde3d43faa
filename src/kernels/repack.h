// Weights rearranged once, at load, for a kernel that reads them faster than the file's own
// layout allows. Today: Q4_0 and Q8_0 on the AVX-512 path, interleaved in groups of 16 rows so
// that one 32-bit lane of a vector holds 4 bytes of one row; a vpdpbusd then advances 16
// output rows at once and each block's scale is applied once per 16 outputs instead of once
// per 16 partial sums of one output (see matmul_packed_avx512.cpp).
//
// Layout of a packed matrix: groups of 16 rows (the last padded with zero rows), each group
// its blocks of 32 in order, each (group, block) 16 fp16 scales (row 0 .. 15), then chunks
// of 64 bytes whose 4-byte lane r holds 4 bytes of row r:
//   Q4_0 (288 bytes): 4 chunks; chunk i holds bytes 4i .. 4i+3 of the row's 16 nibble bytes
//     (low nibbles: elements 4i .. 4i+3, high nibbles: elements 16+4i .. 16+4i+3);
//   Q8_0 (544 bytes): 8 chunks; chunk k holds elements 4k .. 4k+3 as unsigned bytes w + 128.
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

struct FreeBytes {
  void operator()(uint8_t* p) const { std::free(p); }
};
using PackedBytes = std::unique_ptr<uint8_t[], FreeBytes>;

// True when the active CPU path has a kernel for `w` packed (AVX-512: Q4_0 and Q8_0).
bool packing_helps(const TensorView& w);

// Bytes pack_matrix allocates for w (0 when w cannot be packed).
size_t packed_bytes(const TensorView& w);

// w's weights in the packed layout (64-byte aligned); w must be Q4_0 or Q8_0 with
// cols % 32 == 0.
PackedBytes pack_matrix(const TensorView& w, size_t* bytes = nullptr);

}  // namespace skiff

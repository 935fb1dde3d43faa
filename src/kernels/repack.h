// Weights rearranged once, at load, for a kernel that reads them faster than the file's own
// layout allows. Today: Q4_0 on the AVX-512 path, interleaved in groups of 16 rows so that one
// 32-bit lane of a vector holds 4 bytes of one row; a vpdpbusd then advances 16 output rows at
// once and each block's scale is applied once per 16 outputs instead of once per 16 partial
// sums of one output (about half the instructions per weight; see matmul_packed_avx512.cpp).
//
// Layout of a packed Q4_0 matrix: groups of 16 rows (the last padded with zero rows), each
// group its blocks in order, each (group, block) 288 bytes:
//   16 fp16 scales (row 0 .. 15), then 4 chunks of 64 bytes: the 4-byte lane r of chunk i is
//   bytes 4i .. 4i+3 of row r's 16 nibble bytes (low nibbles: elements 4i .. 4i+3, high
//   nibbles: elements 16+4i .. 16+4i+3).
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

struct FreeBytes {
  void operator()(uint8_t* p) const { std::free(p); }
};
using PackedBytes = std::unique_ptr<uint8_t[], FreeBytes>;

// True when the active CPU path has a kernel for `w` packed (AVX-512 and Q4_0 today).
bool packing_helps(const TensorView& w);

// w's weights in the packed layout (64-byte aligned); w must be Q4_0 with cols % 32 == 0.
PackedBytes pack_q4_0(const TensorView& w, size_t* bytes = nullptr);

}  // namespace skiff

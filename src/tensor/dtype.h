// Tensor element types, numbered exactly as GGUF/ggml numbers them, and the block layout of
// each quantized type (one place for all block formats, as ggml does). A row of n elements of
// type t occupies row_bytes(t, n) bytes; n must be a multiple of block_size(t).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace skiff {

enum class DType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  BF16 = 30,
};

struct DTypeTraits {
  std::string_view name;  // as llama.cpp prints it: "f32", "q4_0", "q4_K", ...
  int block_size;         // elements per block (1 for float types)
  int block_bytes;        // bytes per block
  bool can_dequantize;    // skiff can read this type
};

// Traits of a GGUF type id; nullopt for ids skiff does not know.
std::optional<DTypeTraits> dtype_traits(uint32_t type_id);
const DTypeTraits& traits(DType type);  // for known types only
inline std::string_view dtype_name(DType type) { return traits(type).name; }
// Parses "f32", "F16", "q8_0", "Q4_K", ... (case-insensitive). nullopt if unknown.
std::optional<DType> parse_dtype(std::string_view name);

// Bytes of a row of n elements (n a multiple of block_size).
inline size_t row_bytes(DType type, int64_t n) {
  const DTypeTraits& t = traits(type);
  return static_cast<size_t>(n / t.block_size) * static_cast<size_t>(t.block_bytes);
}

// IEEE half and bfloat16 conversions (round-to-nearest-even on the way down).
float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);
float bf16_to_fp32(uint16_t h);
uint16_t fp32_to_bf16(float f);

// Dequantizes n elements (a multiple of the block size) of `type` from src into dst.
// Exactly the ggml reference definitions (dequantize_row_* in ggml-quants.c).
void dequantize_row(DType type, const void* src, float* dst, int64_t n);

// Quantizes n floats (a multiple of the block size) into dst (row_bytes(type, n) bytes),
// with ggml's reference rounding. Supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
// Q4_K, Q6_K.
// Returns false for a type it cannot produce.
bool quantize_row(DType type, const float* src, void* dst, int64_t n);

}  // namespace skiff

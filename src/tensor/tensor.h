// A 2-D weight matrix (or 1-D vector, rows == 1) viewed in place: typically a span of the
// memory-mapped model file. Row r holds `cols` elements of `type` at data + r * row_stride.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "tensor/dtype.h"

namespace skiff {

struct TensorView {
  std::string name;
  DType type = DType::F32;
  int64_t cols = 0;  // elements per row (GGUF ne[0])
  int64_t rows = 0;  // GGUF ne[1] (1 for vectors)
  const uint8_t* data = nullptr;
  size_t row_stride = 0;  // bytes per row
  // The same weights rearranged for the active CPU path's kernel (kernels/repack.h), owned by
  // the model; nullptr when not packed. `data` stays valid either way.
  const uint8_t* packed = nullptr;

  bool empty() const { return data == nullptr; }
  const uint8_t* row(int64_t r) const { return data + static_cast<size_t>(r) * row_stride; }
  size_t nbytes() const { return row_stride * static_cast<size_t>(rows); }
  // The vector as floats, for F32 vectors (norm weights are always F32 after loading).
  const float* f32() const { return reinterpret_cast<const float*>(data); }
};

// A view of rows x cols contiguous rows of `type` (buffers the caller owns).
inline TensorView matrix_view(DType type, const void* data, int64_t rows, int64_t cols, std::string name = {}) {
  TensorView t;
  t.name = std::move(name);
  t.type = type;
  t.rows = rows;
  t.cols = cols;
  t.data = static_cast<const uint8_t*>(data);
  t.row_stride = row_bytes(type, cols);
  return t;
}

// A view of rows x cols contiguous floats (buffers the caller owns).
inline TensorView f32_view(const float* data, int64_t rows, int64_t cols, std::string name = {}) {
  return matrix_view(DType::F32, data, rows, cols, std::move(name));
}

}  // namespace skiff

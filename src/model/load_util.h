// Helpers the model loaders share (load_gguf.cpp, load_hf.cpp): shape text for messages and
// the one conversion every loader does, norm vectors to F32. Nothing here reads a file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/model.h"

namespace skiff {

// "[4096, 32000]".
inline std::string shape_string(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

// A norm weight vector as F32: `v` itself when already F32, else a converted copy the model
// owns (norms are read element by element in the forward pass, so they are kept as floats).
inline TensorView f32_vector(Model& model, TensorView v) {
  if (v.type == DType::F32) return v;
  std::vector<float>& buf = model.owned.emplace_back(static_cast<size_t>(v.cols));
  dequantize_row(v.type, v.data, buf.data(), v.cols);
  v.type = DType::F32;
  v.data = reinterpret_cast<const uint8_t*>(buf.data());
  v.row_stride = row_bytes(DType::F32, v.cols);
  return v;
}

}  // namespace skiff

// Writes a loaded model as a GGUF file of architecture "llama" that both skiff and llama.cpp
// read: used by `skiff convert` (llama2.c -> GGUF) and `skiff quantize` (retyping weights).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "io/gguf.h"
#include "io/quant_scheme.h"
#include "tensor/dtype.h"

namespace skiff {

struct Model;

// llama.cpp's general.file_type number (LLAMA_FTYPE_*) for a file whose matrices are `t`.
uint32_t llama_file_type(DType t);

// Matrices are stored as `type`; vectors (norms) and matrices whose rows are not a multiple
// of the type's block size stay F32. progress(done, total) after each tensor.
void save_model_gguf(const Model& model, const std::string& path, DType type,
                     const std::function<void(int, int)>& progress = {});
// The same with each matrix's type chosen by `scheme` (quant_tensor_type), e.g. Q4_K_M.
void save_model_gguf(const Model& model, const std::string& path, const QuantScheme& scheme,
                     const std::function<void(int, int)>& progress = {});

// Writes a copy of `source` to `path` (atomically): every metadata key (then `extra`, which
// replaces keys of the same name) and the tensors `keep` accepts, with their bytes unchanged
// and in their original order. `keep` unset keeps every tensor. Used for a flash pack's
// resident.gguf and to add keys to a written model.
void copy_gguf(const GgufFile& source, const std::string& path,
               const std::function<bool(const GgufTensorInfo&)>& keep = {},
               const std::vector<std::pair<std::string, GgufValue>>& extra = {});

}  // namespace skiff

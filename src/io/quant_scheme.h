// Which weight type each tensor of a written model gets (`skiff quantize`, `skiff synth`): one
// type for every matrix ("q8_0"), or llama.cpp's Q4_K_M mix ("q4_k_m"), where the output head
// and some layers' attn_v / ffn_down keep more bits.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "tensor/dtype.h"

namespace skiff {

struct QuantScheme {
  DType base = DType::F16;  // the type of most matrices
  bool q4_k_m = false;      // llama.cpp's Q4_K_M mix (base is then Q4_K)

  std::string name() const;  // "q8_0", "q4_k_m"
};

// A type name as parse_dtype reads it, or "q4_k_m" (any case). nullopt if unknown.
std::optional<QuantScheme> parse_quant_scheme(std::string_view name);

// llama.cpp's general.file_type (LLAMA_FTYPE_*): 15 (MOSTLY_Q4_K_M) for the mix.
uint32_t quant_scheme_file_type(const QuantScheme& scheme);

// The type of the matrix `name` (GGUF tensor name, "blk.N." prefix for layer tensors) whose
// rows hold `cols` values, in a model of n_layers layers; has_output: the model has its own
// output.weight (otherwise token_embd.weight is also the head). Uniform schemes keep rows
// that are not a multiple of the block size in F32 (skiff's rule); the mix falls back as
// llama.cpp does (Q4_K -> Q5_0, Q6_K -> Q8_0, then F16).
DType quant_tensor_type(const QuantScheme& scheme, std::string_view name, int64_t cols, int n_layers,
                        bool has_output);

}  // namespace skiff

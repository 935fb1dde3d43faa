#include "io/quant_scheme.h"

#include <cctype>
#include <charconv>

#include "io/export_gguf.h"

namespace skiff {
namespace {

bool same_ignoring_case(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

// The N of "blk.N.", or -1.
int layer_of(std::string_view name) {
  if (!name.starts_with("blk.")) return -1;
  int layer = -1;
  const char* begin = name.data() + 4;
  auto [end, ec] = std::from_chars(begin, name.data() + name.size(), layer);
  return ec == std::errc() && end < name.data() + name.size() && *end == '.' ? layer : -1;
}

// llama.cpp's choice of layers that get more bits in the _M mixes: the first and last
// eighth, and every third layer in between.
bool use_more_bits(int layer, int n_layers) {
  return layer < n_layers / 8 || layer >= 7 * n_layers / 8 || (layer - n_layers / 8) % 3 == 2;
}

bool fits(DType type, int64_t cols) { return cols % traits(type).block_size == 0; }

DType q4_k_m_type(std::string_view name, int64_t cols, int n_layers, bool has_output) {
  const bool head = name == "output.weight" || (!has_output && name == "token_embd.weight");
  if (head) return fits(DType::Q6_K, cols) ? DType::Q6_K : DType::Q8_0;
  DType type = DType::Q4_K;  // token_embd of a model with its own head included
  const int layer = layer_of(name);
  if (layer >= 0 && (name.ends_with(".attn_v.weight") || name.ends_with(".ffn_down.weight")) &&
      use_more_bits(layer, n_layers))
    type = DType::Q6_K;
  if (fits(type, cols)) return type;
  const DType fallback = type == DType::Q6_K ? DType::Q8_0 : DType::Q5_0;
  return fits(fallback, cols) ? fallback : DType::F16;
}

}  // namespace

std::string QuantScheme::name() const { return q4_k_m ? "q4_k_m" : std::string(dtype_name(base)); }

std::optional<QuantScheme> parse_quant_scheme(std::string_view name) {
  if (same_ignoring_case(name, "q4_k_m")) return QuantScheme{DType::Q4_K, true};
  std::optional<DType> t = parse_dtype(name);
  if (!t) return std::nullopt;
  return QuantScheme{*t, false};
}

uint32_t quant_scheme_file_type(const QuantScheme& scheme) {
  return scheme.q4_k_m ? 15 : llama_file_type(scheme.base);
}

DType quant_tensor_type(const QuantScheme& scheme, std::string_view name, int64_t cols, int n_layers,
                        bool has_output) {
  if (scheme.q4_k_m) return q4_k_m_type(name, cols, n_layers, has_output);
  return fits(scheme.base, cols) ? scheme.base : DType::F32;
}

}  // namespace skiff

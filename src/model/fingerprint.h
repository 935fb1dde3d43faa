// A model's identity, cheaply: what pipeline stages compare across processes and what a
// memory store records, so that a file built with another model is refused.
#pragma once

#include <cstdint>
#include <string>

#include "model/model.h"

namespace skiff {

// What identifies a model file cheaply: its size, a hash of its first MiB (the header,
// metadata and tensor table of a GGUF file) and last 64 KiB, and the hyper-parameters.
struct ModelFingerprint {
  uint64_t file_size = 0;
  uint64_t hash = 0;
  int32_t n_layers = 0, dim = 0, vocab_size = 0, kv_dim = 0;
  bool operator==(const ModelFingerprint&) const = default;
  std::string describe() const;
};
ModelFingerprint fingerprint(const Model& model);

}  // namespace skiff

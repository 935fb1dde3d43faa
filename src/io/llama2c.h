// llama.c checkpoints (Karpathy's llama2.c): the legacy export (7 int32 header, negative
// vocab size meaning an unshared classifier) and the version-1 "ak42" export (256-byte
// header). All weights are F32 in PyTorch's [out][in] order, so they are used in place.
#pragma once

#include <memory>
#include <string>

#include "base/mapped_file.h"

namespace skiff {

struct Model;

std::unique_ptr<Model> load_llama2c(std::shared_ptr<MappedFile> file, const std::string& tokenizer_path);

}  // namespace skiff

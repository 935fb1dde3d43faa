// `skiff memory build`: encodes every knowledge-base entry once and writes the store.
#pragma once

#include <functional>
#include <span>
#include <string>

#include "memory/knowledge_base.h"
#include "memory/store.h"
#include "model/model.h"

namespace skiff::memory {

struct BuildOptions {
  KvTypes types{DType::F16, DType::F16};  // what the store keeps
  int threads = 0;
  int max_entry_tokens = 1024;            // longer entries are an error naming them
  Retriever retriever = Retriever::kLexical;
  int lexical_dim = 1024;                 // buckets of the lexical retriever
  std::function<void(size_t done, size_t total)> progress;
};

struct BuildStats {
  size_t entries = 0;
  int64_t tokens = 0;
  uint64_t file_bytes = 0;
  double seconds = 0;
};

BuildStats build_store(const Model& model, std::span<const KbEntry> kb, const std::string& path,
                       const BuildOptions& options);

}  // namespace skiff::memory

// libFuzzer target for memory index files (src/memory/ann.h, STORE.hnsw): any bytes must
// either parse or throw skiff::Error. When they parse, every neighbour list the graph
// describes must lie within it and name an entry that reaches that level (what keeps
// hnswlib, which the graph is handed to, inside its arrays); ASan catches any read outside.
#include <cstddef>
#include <cstdint>
#include <span>

#include "base/error.h"
#include "memory/ann.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const skiff::memory::AnnGraph g = skiff::memory::parse_ann(std::span<const uint8_t>(data, size), "fuzz.hnsw");
    volatile uint64_t sink = 0;
    for (size_t i = 0; i < g.level.size(); ++i) {
      for (uint32_t l = 0; l <= g.level[i]; ++l) {
        for (uint32_t j : g.neighbours(i, l)) {
          if (j >= g.n_entries || g.level[j] < l) __builtin_trap();
          sink = sink + j;
        }
      }
    }
  } catch (const skiff::Error&) {
    // Rejected input: the expected outcome for most of them.
  }
  return 0;
}

// libFuzzer target for memory store files (src/memory/store.h): any bytes must either open
// or throw skiff::Error. When they open, every entry the tables describe must be readable
// within the bytes: its id, text, tokens, retrieval vector and every layer's keys and values
// (ASan catches any read outside the input), and its checksum check must not crash.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "base/error.h"
#include "memory/store.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const skiff::memory::MemoryStore store(std::span<const uint8_t>(data, size), "fuzz.skm");
    volatile uint64_t sink = 0;
    for (size_t i = 0; i < store.size(); ++i) {
      const skiff::memory::MemoryStore::Entry e = store.entry(i);
      for (char c : e.id) sink = sink + static_cast<uint8_t>(c);
      for (char c : e.text) sink = sink + static_cast<uint8_t>(c);
      for (int32_t t : store.tokens(i)) sink = sink + static_cast<uint32_t>(t);
      for (float v : store.vector(i)) sink = sink + (v > 0);
      for (int l = 0; l < store.n_layers(); ++l) {
        const size_t keys = static_cast<size_t>(e.kv_rows) * store.key_row_bytes();
        const size_t values = static_cast<size_t>(e.kv_rows) * store.value_row_bytes();
        sink = sink + store.keys(i, l)[0] + store.keys(i, l)[keys - 1];
        sink = sink + store.values(i, l)[0] + store.values(i, l)[values - 1];
      }
      try {
        store.verify_entry(i);
      } catch (const skiff::Error&) {
      }
    }
  } catch (const skiff::Error&) {
    // Rejected input: the expected outcome for most of them.
  }
  return 0;
}

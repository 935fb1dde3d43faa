// libFuzzer target for the safetensors reader: any input must either parse or throw
// skiff::Error. When it parses, every tensor's bytes are read (bounded) and, for the float
// types skiff computes with, the first elements converted, so the sanitizers see every view.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "base/error.h"
#include "io/safetensors.h"
#include "tensor/dtype.h"

namespace {

constexpr size_t kMaxBytesPerTensor = 4096;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  size_t sink = 0;
  try {
    const skiff::SafetensorsFile f = skiff::SafetensorsFile::parse(
        skiff::MappedFile::borrow(std::span<const uint8_t>(data, size), "fuzz.safetensors"));
    for (const auto& [key, value] : f.metadata()) sink += key.size() + value.size();
    for (const skiff::SafetensorsTensor& t : f.tensors()) {
      if (f.find(t.name) != &t) __builtin_trap();  // lookup must find the same entry
      const size_t n = std::min(t.nbytes(), kMaxBytesPerTensor);
      for (size_t i = 0; i < n; ++i) sink += t.data[i];
      // The loader copies a tensor whose start is not aligned to its element (kernels read
      // elements in place); here such a tensor is only read as bytes.
      if (t.type && t.element_count() > 0 &&
          reinterpret_cast<uintptr_t>(t.data) % skiff::row_bytes(*t.type, 1) == 0) {
        const int64_t elements = std::min<int64_t>(t.element_count(), 64);
        std::vector<float> out(static_cast<size_t>(elements));
        skiff::dequantize_row(*t.type, t.data, out.data(), elements);
        for (float x : out) sink += x > 0;
      }
    }
  } catch (const skiff::Error&) {
    // Rejected input: the expected outcome for most of them.
  }
  volatile size_t keep = sink;  // keep the reads from being optimised away
  (void)keep;
  return 0;
}

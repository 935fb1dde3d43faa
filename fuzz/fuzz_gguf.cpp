// libFuzzer target for the GGUF reader: any input must either parse or throw skiff::Error.
// When it parses, every metadata value is read back and the first rows of every readable
// tensor are dequantized (bounded), so the sanitizers see the whole path a loader takes.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "base/error.h"
#include "io/gguf.h"
#include "tensor/dtype.h"

namespace {

// Bounds the work per input: elements dequantized per tensor.
constexpr int64_t kMaxElementsPerTensor = 4096;

void touch_value(const skiff::GgufValue& v, size_t* sink) {
  *sink += v.to_display_string(4).size();
  if (v.is_integer()) {
    try {
      *sink += static_cast<size_t>(v.as_int("fuzz"));
    } catch (const skiff::Error&) {  // a uint64 beyond int64: reported, not a crash
    }
  }
  if (v.is_number()) *sink += v.as_double("fuzz") > 0;
  if (v.type == skiff::GgufType::STRING) *sink += v.as_string("fuzz").size();
  if (v.type == skiff::GgufType::BOOL) *sink += v.as_bool("fuzz");
  if (v.type == skiff::GgufType::ARRAY) {
    for (const skiff::GgufValue& item : v.as_array("fuzz")) touch_value(item, sink);
  }
}

void touch_tensor(const skiff::GgufTensorInfo& t, size_t* sink) {
  const auto traits = skiff::dtype_traits(static_cast<uint32_t>(t.type));
  if (!traits || !traits->can_dequantize) return;
  const int64_t row_length = t.dims[0];
  const int64_t rows = t.element_count() / row_length;
  // Whole blocks only: a prefix of a row is itself a valid row of the same type.
  int64_t n = std::min(row_length, kMaxElementsPerTensor);
  n -= n % traits->block_size;
  if (n == 0) n = traits->block_size;  // one block is always within the row
  std::vector<float> out(static_cast<size_t>(n));
  const size_t stride = skiff::row_bytes(t.type, row_length);
  for (int64_t r = 0; r < std::min<int64_t>(rows, 2); ++r) {
    skiff::dequantize_row(t.type, t.data + r * stride, out.data(), n);
    for (float f : out) *sink += f > 0;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  size_t sink = 0;
  try {
    const skiff::GgufFile g = skiff::GgufFile::parse(
        skiff::MappedFile::borrow(std::span<const uint8_t>(data, size), "fuzz.gguf"));
    for (const auto& [key, value] : g.metadata()) {
      sink += key.size();
      touch_value(value, &sink);
    }
    for (const skiff::GgufTensorInfo& t : g.tensors()) touch_tensor(t, &sink);
    (void)g.get_int("general.alignment", 0);
    (void)g.get_string("general.architecture", "");
  } catch (const skiff::Error&) {
    // Rejected input: the expected outcome for most of them.
  }
  volatile size_t keep = sink;  // keep the reads from being optimised away
  (void)keep;
  return 0;
}

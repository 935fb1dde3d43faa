// libFuzzer target for the flash pack header: any bytes given as the start of a bundles.bin
// (the input's size is the file's size) must either parse or throw skiff::Error. When they
// parse, every bundle offset the header promises must lie inside the file.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "base/error.h"
#include "flash/pack.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const size_t head = size < skiff::flash::kPackAlign ? size : skiff::flash::kPackAlign;
  try {
    const skiff::flash::PackHeader h = skiff::flash::parse_pack_header(
        std::span<const uint8_t>(data, head), size, "fuzz/bundles.bin");
    // The last bundle must end inside the file: a reader trusts these offsets.
    const uint64_t last = h.offset(h.n_layers - 1, h.ffn_dim - 1);
    if (last + h.stride > size || h.gate_offset() + h.row_bytes > h.stride) std::abort();
  } catch (const skiff::Error&) {
    // Rejected input: the expected outcome for most of them.
  }
  return 0;
}

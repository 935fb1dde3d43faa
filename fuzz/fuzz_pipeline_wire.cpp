// libFuzzer target for the pipeline's message parsers (src/dist/wire.h): any bytes must
// either parse or throw skiff::Error; what parses must encode back to the same bytes. The
// first byte picks the parser (batch, copy, plan) and the rest is the message, checked for
// a model of width 4 and 8 layers decoding 4 sequences of 64 positions on 3 stages.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "base/error.h"
#include "dist/wire.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::span<const uint8_t> msg(data + 1, size - 1);
  constexpr int kDim = 4, kLayers = 8, kSequences = 4, kContext = 64, kStages = 3;
  try {
    switch (data[0] % 3) {
      case 0: {
        const skiff::dist::Batch b = skiff::dist::parse_batch(msg, kDim, kLayers, kSequences, kContext);
        const std::vector<uint8_t> again = skiff::dist::encode_batch(
            b.header, b.seqs, reinterpret_cast<const float*>(msg.data() + b.payload_offset), kDim);
        if (again.size() != msg.size() || !std::equal(again.begin(), again.end(), msg.begin())) __builtin_trap();
        break;
      }
      case 1: {
        const skiff::dist::CopyPrefix c = skiff::dist::parse_copy(msg, kSequences, kContext);
        if (c.from == c.to || c.n < 0 || c.n > kContext) __builtin_trap();
        break;
      }
      default: {
        const skiff::dist::PlanMessage p = skiff::dist::parse_plan(msg, kStages, kLayers);
        const std::vector<uint8_t> again = skiff::dist::encode_plan(p);
        if (again.size() != msg.size() || !std::equal(again.begin(), again.end(), msg.begin())) __builtin_trap();
        break;
      }
    }
  } catch (const skiff::Error&) {
  }
  return 0;
}

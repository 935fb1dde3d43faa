// The memory budget of a flash run (`--mem-budget`): every long-lived allocation of the run
// is charged here, and a charge past the limit is an Error, so the engine never exceeds the
// budget it was given (tests read the accounting back).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace skiff::flash {

class MemoryBudget {
 public:
  explicit MemoryBudget(uint64_t limit = 0) : limit_(limit) {}  // 0: unlimited

  uint64_t limit() const { return limit_; }
  uint64_t used() const { return used_; }
  uint64_t remaining() const { return limit_ == 0 ? UINT64_MAX : limit_ - used_; }
  // Adds `bytes` under `what`; throws Error naming the total, the limit and every item when
  // the limit would be passed.
  void charge(uint64_t bytes, std::string_view what);
  // "resident weights 663.2 MiB, KV cache 16.0 MiB, ..."
  std::string describe() const;

 private:
  uint64_t limit_;
  uint64_t used_ = 0;
  std::vector<std::pair<std::string, uint64_t>> items_;
};

// Parses a size: "850M", "1.5G", "512MiB", "4096" (bytes), or "50%" of `whole`. Throws Error
// on anything else.
uint64_t parse_mem_size(std::string_view text, uint64_t whole);
std::string format_bytes(uint64_t bytes);  // "663.2 MiB"

}  // namespace skiff::flash

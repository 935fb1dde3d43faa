#include "flash/budget.h"

#include <cctype>
#include <charconv>
#include <cmath>

#include <fmt/format.h>

#include "base/error.h"

namespace skiff::flash {

void MemoryBudget::charge(uint64_t bytes, std::string_view what) {
  items_.emplace_back(std::string(what), bytes);
  used_ += bytes;
  if (limit_ != 0 && used_ > limit_) {
    fail("memory budget {} exceeded: {} needed ({})", format_bytes(limit_), format_bytes(used_),
         describe());
  }
}

std::string MemoryBudget::describe() const {
  std::string out;
  for (const auto& [what, bytes] : items_) {
    if (!out.empty()) out += ", ";
    out += fmt::format("{} {}", what, format_bytes(bytes));
  }
  return out;
}

uint64_t parse_mem_size(std::string_view text, uint64_t whole) {
  std::string s(text);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  double value = 0;
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, value);
  if (ec != std::errc() || p == s.data() || !(value >= 0) || !std::isfinite(value))
    fail("bad memory size '{}': expected e.g. 850M, 1.5G, 512MiB or 50%", text);
  std::string unit(p, end);
  for (char& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  double scale;
  if (unit == "%") {
    if (value > 100) fail("bad memory size '{}': more than 100%", text);
    return static_cast<uint64_t>(value / 100.0 * static_cast<double>(whole));
  } else if (unit.empty() || unit == "b") {
    scale = 1;
  } else if (unit == "k" || unit == "kb" || unit == "kib") {
    scale = 1024.0;
  } else if (unit == "m" || unit == "mb" || unit == "mib") {
    scale = 1024.0 * 1024;
  } else if (unit == "g" || unit == "gb" || unit == "gib") {
    scale = 1024.0 * 1024 * 1024;
  } else {
    fail("bad memory size '{}': unknown unit '{}' (use K, M, G or %)", text, unit);
  }
  if (value * scale > 1e18) fail("bad memory size '{}': too large", text);
  return static_cast<uint64_t>(value * scale);
}

std::string format_bytes(uint64_t bytes) {
  const double b = static_cast<double>(bytes);
  if (b >= 1024.0 * 1024 * 1024) return fmt::format("{:.2f} GiB", b / (1024.0 * 1024 * 1024));
  if (b >= 1024.0 * 1024) return fmt::format("{:.1f} MiB", b / (1024.0 * 1024));
  if (b >= 1024.0) return fmt::format("{:.1f} KiB", b / 1024.0);
  return fmt::format("{} B", bytes);
}

}  // namespace skiff::flash

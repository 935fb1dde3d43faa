// libFuzzer target for JSON-constrained decoding. The input is a schema's JSON text and a
// document, split at the first NUL byte (no NUL: the whole input is the document, constrained
// to any object). from_schema must build or throw skiff::Error; the document's bytes are then
// fed one at a time (refused ones skipped) and must never crash. Checked on the way: the
// automaton never dead-ends (some byte continues the text unless it is complete), accept()
// agrees with can_accept(), and a complete text always parses as JSON.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "base/error.h"
#include "sample/json_constraint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t split = input.find('\0');
  std::optional<skiff::JsonConstraint> constraint;
  std::string_view document = input;
  if (split != std::string_view::npos) {
    document = input.substr(split + 1);
    const nlohmann::ordered_json schema =
        nlohmann::ordered_json::parse(input.substr(0, split), nullptr, /*allow_exceptions=*/false);
    if (schema.is_discarded()) return 0;
    try {
      constraint = skiff::JsonConstraint::from_schema(schema);
    } catch (const skiff::Error&) {
      return 0;  // unsupported or invalid schema: the expected outcome for most inputs
    }
  } else {
    constraint = skiff::JsonConstraint::any_object();
  }
  std::string text;
  for (char c : document) {
    const std::string_view byte(&c, 1);
    if (!constraint->can_accept(byte)) continue;
    constraint->accept(byte);
    text += c;
    if (!constraint->complete()) {
      bool any = false;
      for (int b = 0; b < 256 && !any; ++b) {
        const char next = static_cast<char>(b);
        any = constraint->can_accept(std::string_view(&next, 1));
      }
      if (!any) __builtin_trap();  // a prefix that can never be completed
    }
  }
  if (constraint->complete() &&
      nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false).is_discarded()) {
    __builtin_trap();  // accepted text that is not JSON
  }
  return 0;
}

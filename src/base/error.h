// Errors at the boundaries (files, flags, requests) are reported by throwing skiff::Error
// with a one-line message that names the file/field/offset at fault. The CLI catches it,
// prints "error: <message>" and exits non-zero. Hot loops never throw.
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace skiff {

struct Error : std::runtime_error {
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// fail("gguf: tensor {} has {} dims", name, n) throws Error with the formatted message.
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace skiff

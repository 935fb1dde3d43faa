#include "cli/llama_aliases.h"

#include <string_view>
#include <utility>

namespace skiff::cli {

std::vector<std::string> expand_llama_aliases(int argc, const char* const* argv) {
  static constexpr std::pair<std::string_view, std::string_view> kAliases[] = {
      {"-pg", "--pg"}, {"-ctk", "--cache-type-k"}, {"-ctv", "--cache-type-v"}};
  std::vector<std::string> out;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    for (auto [alias, name] : kAliases) {
      if (i > 0 && (arg == alias || (arg.starts_with(alias) && arg.size() > alias.size() && arg[alias.size()] == '='))) {
        arg = std::string(name) + arg.substr(alias.size());
        break;
      }
    }
    out.push_back(std::move(arg));
  }
  return out;
}

}  // namespace skiff::cli

// llama.cpp's single-dash long flags (-pg, -ctk, -ctv) for the options skiff shares with it.
// CLI11 reads one-dash names as one letter, so main() rewrites each such argument, when it is
// a whole argument, into skiff's long name before parsing.
#pragma once

#include <string>
#include <vector>

namespace skiff::cli {

// argv[1..] with "-pg" -> "--pg", "-ctk" -> "--cache-type-k", "-ctv" -> "--cache-type-v"
// ("-ctk=q8_0" too); every other argument unchanged.
std::vector<std::string> expand_llama_aliases(int argc, const char* const* argv);

}  // namespace skiff::cli

// Helpers several test files share: paths into the shared data folder, scratch paths, whole-file
// reads, llama.cpp's tokenizer test vectors, an Error's message, and parsing bytes from an
// exact-size copy (so ASan sees any read past the end).
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "base/error.h"
#include "base/mapped_file.h"

namespace skiff::test {

// `relative` inside the shared data folder (../shared next to the checkout).
inline std::string shared_path(const std::string& relative) {
  return std::string(SKIFF_SHARED_DIR) + "/" + relative;
}

// <temp folder>/skiff_<tag>_<pid>_<name>: a scratch path no other test process shares.
inline std::string temp_path(const std::string& tag, const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("skiff_" + tag + "_" + std::to_string(getpid()) + "_" + name))
      .string();
}

// The whole file; std::runtime_error when it cannot be opened.
inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

inline std::vector<uint8_t> read_bytes(const std::string& path) {
  const std::string s = read_text(path);
  return {s.begin(), s.end()};
}

// The floats' bytes as they lie in memory (little-endian on every target skiff builds for).
inline std::vector<uint8_t> f32_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> out(v.size() * 4);
  std::memcpy(out.data(), v.data(), out.size());
  return out;
}

// The message of the Error fn() throws, or "" when it throws none.
template <typename F>
std::string error_of(F&& fn) {
  try {
    std::forward<F>(fn)();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// A File (GgufFile, SafetensorsFile) parsed from a private, exact-size copy of some bytes. The
// copy lives as long as the result, since tensor data point into it.
template <typename File>
struct Parsed {
  std::shared_ptr<std::vector<uint8_t>> bytes;
  File file;
};

template <typename File>
Parsed<File> parse_copy(const std::vector<uint8_t>& bytes, const std::string& name) {
  auto copy = std::make_shared<std::vector<uint8_t>>(bytes);
  return Parsed<File>{copy, File::parse(MappedFile::borrow(*copy, name))};
}

// One of llama.cpp's test-tokenizer-0 cases: a text and its token ids, without BOS.
struct VocabCase {
  std::string text;
  std::vector<int32_t> ids;
};

// The cases next to a vocabulary file: `vocab_path`.inp holds the texts, each followed by
// "\n__ggml_vocab_test__\n"; `vocab_path`.out one line of ids per text.
inline std::vector<VocabCase> read_vocab_cases(const std::string& vocab_path) {
  const std::string inp = read_text(vocab_path + ".inp");
  const std::string separator = "\n__ggml_vocab_test__\n";
  std::vector<std::string> texts;
  for (size_t pos = 0; pos < inp.size();) {
    const size_t next = inp.find(separator, pos);
    if (next == std::string::npos) {
      texts.push_back(inp.substr(pos));
      break;
    }
    texts.push_back(inp.substr(pos, next - pos));
    pos = next + separator.size();
  }
  std::istringstream out(read_text(vocab_path + ".out"));
  std::vector<VocabCase> cases;
  std::string line;
  while (std::getline(out, line)) {
    if (cases.size() == texts.size()) {
      throw std::runtime_error(vocab_path + ": more .out lines than .inp texts");
    }
    VocabCase c{texts[cases.size()], {}};
    std::istringstream ids(line);
    for (int32_t id; ids >> id;) c.ids.push_back(id);
    cases.push_back(std::move(c));
  }
  if (cases.size() != texts.size()) {
    throw std::runtime_error(vocab_path + ": .inp/.out counts differ");
  }
  return cases;
}

}  // namespace skiff::test

// libFuzzer target for the byte-level BPE tokenizer: each input is encoded (with and without
// BOS and special-token parsing, chosen by the first byte) and decoded with the GPT-2
// vocabulary under every pre-tokenizer (same pieces and merges, another splitter), checking
// ids in range, decode(encode(x)) == x whenever x is canonical UTF-8 and holds no special
// text, and that streaming decode agrees with decode. The vocabulary is read at startup from
// $SKIFF_FUZZ_BPE_VOCAB, else ../shared/models/vocab/ggml-vocab-gpt-2.gguf next to the repo
// (where CMake's SKIFF_SHARED_DIR points).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "io/gguf.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"
#include "tokenizer/vocab.h"

namespace {

std::string vocab_path() {
  const char* path = std::getenv("SKIFF_FUZZ_BPE_VOCAB");
  if (path != nullptr && *path != '\0') return path;
  std::string source = __FILE__;  // <repo>/fuzz/fuzz_bpe_tokenizer.cpp
  std::string repo = source.substr(0, source.rfind('/'));
  repo = repo.substr(0, repo.rfind('/'));
  return repo + "/../shared/models/vocab/ggml-vocab-gpt-2.gguf";
}

const std::vector<std::unique_ptr<skiff::Tokenizer>>& tokenizers() {
  static const auto list = [] {
    std::vector<std::unique_ptr<skiff::Tokenizer>> out;
    const std::string path = vocab_path();
    try {
      const skiff::Vocab vocab = skiff::vocab_from_gguf(skiff::GgufFile::open(path));
      for (const char* pre : {"gpt-2", "llama-bpe", "qwen2", "starcoder", "falcon", "default"}) {
        skiff::Vocab v = vocab;
        v.pre = pre;
        out.push_back(std::make_unique<skiff::Tokenizer>(std::move(v)));
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "fuzz_bpe_tokenizer: cannot load %s: %s (set SKIFF_FUZZ_BPE_VOCAB)\n",
                   path.c_str(), e.what());
      std::abort();
    }
    return out;
  }();
  return list;
}

// True when decoding and re-encoding gives the same bytes: no invalid sequence, no overlong
// form (the tokenizer reads those as their code points, so they cannot come back as given).
bool canonical_utf8(std::string_view s) {
  std::vector<uint32_t> cpts;
  skiff::decode_utf8(s, cpts);
  std::string again;
  for (uint32_t cp : cpts) skiff::append_utf8(cp, again);
  return again == s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  const bool add_bos = (mode & 1) != 0;
  const bool parse_special = (mode & 2) != 0;
  const bool round_trip = canonical_utf8(text) && text.find("<|endoftext|>") == std::string_view::npos;
  for (const auto& tok : tokenizers()) {
    const std::vector<int32_t> ids = tok->encode(text, add_bos, parse_special);
    for (int32_t id : ids) {
      if (id < 0 || id >= tok->vocab().size()) std::abort();
    }
    const std::string decoded = tok->decode(ids);
    if (round_trip && decoded != text) {
      std::fprintf(stderr, "round trip failed with pre %s\n", tok->vocab().pre.c_str());
      std::abort();
    }
    skiff::StreamDecoder stream(*tok);
    std::string streamed;
    for (int32_t id : ids) streamed += stream.push(id);
    streamed += stream.flush();
    if (streamed != decoded) std::abort();
    (void)tok->detokenize(ids);
  }
  return 0;
}

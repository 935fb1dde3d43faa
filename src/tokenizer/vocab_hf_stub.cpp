// TEMPORARY (branch wt-hf): vocab_from_hf_tokenizer is implemented in another branch; this
// stub lets the HF loader link until that merge, which deletes this file.
#include "base/error.h"
#include "tokenizer/vocab.h"

namespace skiff {

Vocab vocab_from_hf_tokenizer(const std::string& tokenizer_json_path, const std::string&) {
  fail("{}: tokenizer.json support not merged yet", tokenizer_json_path);
}

}  // namespace skiff

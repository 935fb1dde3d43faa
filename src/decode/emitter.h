// The end-of-generation rules every decoding loop shares (autoregressive, early exit,
// speculative): a loop offers tokens one at a time and the Emitter says whether to go on.
// Because speculative decoding emits through the same rules, it stops exactly where plain
// decoding would: at an end-of-generation token (EOS, end of turn, ...: never passed on), at max_tokens, when the callback says so, or when
// the sequence has filled the context (the last token then never needs a forward pass).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace skiff {

// Called with each generated token; return false to stop (e.g. a stop string matched).
using TokenCallback = std::function<bool(int32_t token)>;

struct GenerateStats {
  int prompt_tokens = 0;
  double prompt_seconds = 0;
  int generated_tokens = 0;
  double generate_seconds = 0;
  bool hit_context_limit = false;
  bool hit_eos = false;
};

class Emitter {
 public:
  // `tokens` holds the prompt and receives every emitted token.
  Emitter(std::vector<int32_t>& tokens, const Tokenizer& tokenizer, int context_length, int max_tokens,
          const TokenCallback& on_token, GenerateStats& stats)
      : tokens_(tokens), tokenizer_(tokenizer), context_length_(context_length), max_tokens_(max_tokens),
        on_token_(on_token), stats_(stats), done_(max_tokens <= 0) {}

  // Offers the next token. Returns true when generation goes on (the token was appended and
  // will need a forward pass), false when it is over (the token was EOS, or the last one).
  bool push(int32_t token) {
    if (done_) return false;
    if (tokenizer_.is_eog(token)) {
      stats_.hit_eos = true;
      return finish();
    }
    ++stats_.generated_tokens;
    tokens_.push_back(token);
    if (!on_token_(token) || stats_.generated_tokens >= max_tokens_) return finish();
    // Every token but the newest has been through the model: the cache is full when those
    // fill the context.
    if (static_cast<int64_t>(tokens_.size()) - 1 >= context_length_) {
      stats_.hit_context_limit = true;
      return finish();
    }
    return true;
  }

  bool done() const { return done_; }
  // Tokens still allowed by max_tokens.
  int remaining() const { return max_tokens_ - stats_.generated_tokens; }

 private:
  bool finish() {
    done_ = true;
    return false;
  }
  std::vector<int32_t>& tokens_;
  const Tokenizer& tokenizer_;
  int64_t context_length_;
  int max_tokens_;
  const TokenCallback& on_token_;
  GenerateStats& stats_;
  bool done_;
};

}  // namespace skiff

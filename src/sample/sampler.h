// Token sampling, in llama.cpp's default order: logits -> penalties -> top_k -> softmax ->
// top_p -> min_p -> temperature -> renormalize -> draw. Every result is deterministic: candidates are ordered by (value desc,
// id asc) everywhere, and the RNG is our own xoshiro256** so a seed gives the same tokens
// with any compiler or standard library. Also StopStrings, for ending generation on text.
// top_p and min_p see the model's probabilities at temperature 1; the temperature only
// reshapes the survivors (HF transformers scales first, so its kept sets can differ at T != 1).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace skiff {

struct SamplerParams {
  float temperature = 0.8f;  // 0 => greedy (argmax after penalties, ties -> lowest id)
  int top_k = 40;            // <= 0: off
  float top_p = 0.95f;       // 1: off; keeps the smallest prefix with cumulative prob >= top_p
  float min_p = 0.05f;       // 0: off; keeps tokens with p >= min_p * p_max
  // llama.cpp's rule, once per distinct token in the last repeat_last_n of the history:
  // logit > 0 ? logit / repeat_penalty : logit * repeat_penalty.
  float repeat_penalty = 1.0f;
  int repeat_last_n = 64;          // 0: no penalties; -1: the whole history
  float presence_penalty = 0.0f;   // subtracted once if the token is in the window
  float frequency_penalty = 0.0f;  // subtracted count-in-window times
  uint64_t seed = 0;               // callers wanting variety pass a random seed themselves

  // Throws Error naming the first bad field: temperature < 0, top_p outside (0, 1],
  // min_p outside [0, 1], repeat_penalty <= 0, repeat_last_n < -1, non-finite values.
  void validate() const;
};

// A distribution over the tokens that survived filtering: parallel arrays sorted by
// descending prob (ties: lower id first), probs summing to 1 and all > 0.
struct TokenDistribution {
  std::vector<int32_t> ids;
  std::vector<float> probs;

  size_t size() const { return ids.size(); }
  // Probability of `id`; 0 if it was filtered out. Linear in size().
  float prob_of(int32_t id) const;
};

// xoshiro256** (Blackman & Vigna) with its state filled by splitmix64(seed), as the authors
// recommend. Small, fast and bit-identical on every platform, unlike std::mt19937 combined
// with std::uniform_real_distribution.
class Xoshiro256StarStar {
 public:
  explicit Xoshiro256StarStar(uint64_t seed);
  uint64_t next();
  double next_double();  // [0, 1) from the top 53 bits of one next()
  float next_float();    // [0, 1) from the top 24 bits of one next()

 private:
  uint64_t state_[4];
};

class Sampler {
 public:
  // Validates the params (throws Error).
  explicit Sampler(SamplerParams params);

  // The filtered distribution for these logits (one per vocabulary entry); `history` is the
  // context so far, used only for the penalties. Greedy gives a one-hot distribution on the
  // argmax. Throws Error for empty logits, a NaN or +inf logit, every logit -inf, or a
  // history token outside the vocabulary (checked when penalties are on). -inf logits are
  // allowed and mean "never". Does not touch the RNG.
  TokenDistribution distribution(std::span<const float> logits,
                                 std::span<const int32_t> history) const;

  // distribution() then draw(). Greedy returns the argmax without using the RNG.
  int32_t sample(std::span<const float> logits, std::span<const int32_t> history);
  // One draw using exactly one uniform() from the RNG. `dist.probs` need not be normalized
  // (e.g. a speculative-decoding residual): the draw is proportional to them.
  int32_t draw(const TokenDistribution& dist);
  // [0, 1) from the RNG; speculative acceptance tests need it.
  float uniform() { return rng_.next_float(); }

  const SamplerParams& params() const { return params_; }

 private:
  SamplerParams params_;
  Xoshiro256StarStar rng_;
};

// Index of the largest logit; ties -> lowest id. Throws Error for empty logits.
int32_t argmax(std::span<const float> logits);

// Ends generation at the first stop string in the generated text, never printing any part
// of it. Text that could be the start of a stop string is held back until it is decided.
// The outcome does not depend on how the text is cut into pieces: it is as if the text came
// one byte at a time, so the stop string that completes first wins (if two complete at the
// same byte, the longer one). Cuts fall where a stop string would start, so valid UTF-8 in
// gives valid UTF-8 out whenever the stop strings are valid UTF-8.
//
// Streaming use:
//   StopStrings stops(params.stop);
//   while (generating) {
//     auto out = stops.push(decoder.push(token));
//     print(out.text);
//     if (out.stopped) break;
//   }
//   if (!stops.stopped()) print(stops.flush());  // EOS or length limit: release the rest
class StopStrings {
 public:
  struct Output {
    std::string text;      // safe to emit now
    bool stopped = false;  // a stop string completed: `text` ends right before it; stop
  };

  // Throws Error if any stop string is empty. An empty list holds nothing back.
  explicit StopStrings(std::vector<std::string> stops);

  // Appends a piece of generated text. After a stop, returns {"", true} and ignores input.
  Output push(std::string_view piece);
  // Generation ended without a stop: returns the held-back text (and clears it).
  // After a stop returns "" (the text from the stop string on is dropped).
  std::string flush();

  bool stopped() const { return matched_ >= 0; }
  // Index in the constructor's list of the stop string that ended generation, or -1.
  int matched() const { return matched_; }
  // Bytes currently held back (never more than the longest stop string minus one).
  size_t held() const { return held_.size(); }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  int matched_ = -1;
};

}  // namespace skiff

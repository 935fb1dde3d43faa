#include "sample/sampler.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

#include "base/error.h"
#include "base/hash.h"

namespace skiff {

namespace {

// A token and its current score: a logit until the softmax, an unnormalized weight after.
struct Candidate {
  float value;
  int32_t id;
};

// The one order used everywhere: higher value first, lower id on ties. A total order (no
// NaN gets this far), so every sort gives the same result with every standard library.
bool before(const Candidate& a, const Candidate& b) {
  return a.value > b.value || (a.value == b.value && a.id < b.id);
}

// The SplitMix64 generator: the next output, advancing the state.
uint64_t splitmix64_next(uint64_t& x) {
  const uint64_t z = splitmix64(x);
  x += 0x9e3779b97f4a7c15ull;
  return z;
}

using CandidateIt = std::vector<Candidate>::iterator;

// A key whose ascending order is `before`: the float's bits made order-preserving as an
// unsigned number, then inverted (value desc), with the id below them (id asc).
uint64_t order_key(const Candidate& c) {
  uint32_t bits = std::bit_cast<uint32_t>(c.value == 0.0f ? 0.0f : c.value);  // -0 == +0
  uint32_t ascending = (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;
  return (uint64_t(~ascending) << 32) | uint32_t(c.id);
}

Candidate from_order_key(uint64_t key) {
  uint32_t ascending = ~uint32_t(key >> 32);
  uint32_t bits = (ascending & 0x80000000u) ? ascending & 0x7fffffffu : ~ascending;
  return {std::bit_cast<float>(bits), int32_t(uint32_t(key))};
}

// Sorts by `before`. Large ranges use an LSD radix sort on order_key, byte by byte, skipping
// bytes that are equal in every key (the high id bytes, mostly): for 32000 candidates it is
// about 6x faster than std::sort. The keys are stored in the candidates' own bytes.
void sort_candidates(CandidateIt first, CandidateIt last, std::vector<Candidate>& scratch) {
  static_assert(sizeof(Candidate) == sizeof(uint64_t));
  size_t n = size_t(last - first);
  if (n <= 1024) {
    std::sort(first, last, before);
    return;
  }
  scratch.resize(n);
  Candidate* from = &*first;
  Candidate* to = scratch.data();
  auto key = [](Candidate c) { return std::bit_cast<uint64_t>(c); };
  for (size_t i = 0; i < n; ++i) from[i] = std::bit_cast<Candidate>(order_key(from[i]));
  for (int shift = 0; shift < 64; shift += 8) {
    size_t starts[257] = {};
    for (size_t i = 0; i < n; ++i) ++starts[((key(from[i]) >> shift) & 0xff) + 1];
    if (std::find(starts + 1, starts + 257, n) != starts + 257) continue;
    for (int digit = 0; digit < 256; ++digit) starts[digit + 1] += starts[digit];
    for (size_t i = 0; i < n; ++i) to[starts[(key(from[i]) >> shift) & 0xff]++] = from[i];
    std::swap(from, to);
  }
  Candidate* out = &*first;
  for (size_t i = 0; i < n; ++i) out[i] = from_order_key(key(from[i]));
}

// Whether partial_sort is the cheap way to bring the best `wanted` of `n` to the front: its
// heap scan costs about one failed comparison per candidate when few are wanted (40 of 32000:
// ~9x faster than nth_element); beyond that, sorting everything is cheaper.
bool partial_sort_pays(size_t wanted, size_t n) { return wanted * 32 <= n; }

bool finite(float x) { return std::isfinite(x); }

// Applies repeat/presence/frequency penalties in place; `candidates` is still indexed by id.
void apply_penalties(const SamplerParams& p, std::vector<Candidate>& candidates,
                     std::span<const int32_t> history) {
  bool neutral =
      p.repeat_penalty == 1.0f && p.presence_penalty == 0.0f && p.frequency_penalty == 0.0f;
  if (neutral || p.repeat_last_n == 0 || history.empty()) return;
  size_t window =
      p.repeat_last_n < 0 ? history.size() : std::min(history.size(), size_t(p.repeat_last_n));
  std::vector<int32_t> recent(history.end() - window, history.end());
  std::sort(recent.begin(), recent.end());
  for (size_t i = 0; i < recent.size();) {
    int32_t id = recent[i];
    size_t j = i;
    while (j < recent.size() && recent[j] == id) ++j;
    size_t count = j - i;
    i = j;
    if (id < 0 || size_t(id) >= candidates.size())
      fail("sampler: history token {} is outside the vocabulary ({} tokens)", id,
           candidates.size());
    float& logit = candidates[id].value;
    logit = logit > 0.0f ? logit / p.repeat_penalty : logit * p.repeat_penalty;
    logit -= float(count) * p.frequency_penalty + p.presence_penalty;
  }
}

// The whole chain up to renormalization: leaves the survivors at the front of `candidates`,
// sorted, with their softmax weights (unnormalized), and returns how many there are.
size_t filter(const SamplerParams& p, std::span<const float> logits,
              std::span<const int32_t> history, std::vector<Candidate>& candidates,
              std::vector<Candidate>& scratch) {
  size_t n = logits.size();
  if (n == 0) fail("sampler: empty logits");
  if (n > size_t(std::numeric_limits<int32_t>::max()))
    fail("sampler: {} logits is more than token ids can address", n);

  candidates.resize(n);
  for (size_t i = 0; i < n; ++i) {
    // Rejects NaN and +inf, which would break the ordering and the softmax below.
    if (!(logits[i] < std::numeric_limits<float>::infinity()))
      fail("sampler: logit {} is {}", i, logits[i]);
    candidates[i] = {logits[i], int32_t(i)};
  }
  apply_penalties(p, candidates, history);

  auto top = std::min_element(candidates.begin(), candidates.end(), before);
  if (top->value == -std::numeric_limits<float>::infinity()) fail("sampler: every logit is -inf");
  if (p.temperature == 0.0f) {
    candidates[0] = {1.0f, top->id};
    return 1;
  }
  const float max_logit = top->value;

  // Whether candidates are in their final order; top_k leaves its survivors sorted.
  bool sorted = false;
  if (p.top_k > 0 && size_t(p.top_k) < n) {
    if (partial_sort_pays(p.top_k, n)) {
      std::partial_sort(candidates.begin(), candidates.begin() + p.top_k, candidates.end(), before);
    } else {
      sort_candidates(candidates.begin(), candidates.end(), scratch);
    }
    candidates.resize(p.top_k);
    sorted = true;
  }

  // Softmax numerator at temperature 1: as in llama.cpp's default chain, top_p and min_p see
  // the model's own probabilities and the temperature only shapes the final draw (applied to
  // the survivors at the end). The max weight is exactly exp(0) = 1. Tokens whose weight is
  // 0 (-inf logits, underflow) can never be drawn, so they leave now.
  double total = 0.0;
  for (Candidate& c : candidates) {
    c.value = std::exp(c.value - max_logit);
    total += c.value;
  }
  std::erase_if(candidates, [](const Candidate& c) { return c.value == 0.0f; });
  size_t count = candidates.size();
  auto begin = candidates.begin();
  // exp() can give distinct logits equal weights, so the top_k survivors (few, and sorted by
  // logit already) are re-sorted to keep the one order: weight desc, id asc.
  if (sorted) sort_candidates(begin, begin + count, scratch);

  // How many of the best candidates survive top_p and min_p, with those sorted at the
  // front. Both filters keep a prefix of the sorted order, so the result is the shorter one.
  // min_p is relative to the max, so top_p's renormalization does not change it, and it can
  // go first as a cheap O(n) partition; top_p still cumulates probabilities normalized over
  // everything that survived top_k.
  size_t keep = count;
  double cumulative = 0.0;
  // The prefix length at which the cumulative prob reaches top_p, or 0 if not within [from, to).
  auto cut_at_top_p = [&](size_t from, size_t to) {
    for (size_t i = from; i < to; ++i) {
      cumulative += candidates[i].value / total;
      if (cumulative >= p.top_p) return i + 1;
    }
    return size_t(0);
  };
  const bool top_p_on = p.top_p < 1.0f;
  if (p.min_p > 0.0f) {
    // p >= min_p * p_max  <=>  weight >= min_p, as p = weight / total and p_max = 1 / total.
    auto above_min_p = [&](const Candidate& c) { return c.value >= p.min_p; };
    if (sorted) {
      keep = std::partition_point(begin, begin + count, above_min_p) - begin;
    } else {
      keep = std::partition(begin, begin + count, above_min_p) - begin;
      sort_candidates(begin, begin + keep, scratch);
    }
    if (top_p_on) {
      if (size_t cut = cut_at_top_p(0, keep)) keep = cut;
    }
  } else if (top_p_on) {
    // Sort in growing chunks, each brought forward by partial_sort, and stop as soon as the
    // cumulative prob reaches top_p: a peaked distribution over 32000 tokens costs one heap
    // scan. When the chunks grow too big for that to pay, sort the rest in one go.
    size_t done = 0, chunk = 64;
    while (done < count) {
      size_t end = std::min(count, done + chunk);
      if (!sorted && partial_sort_pays(end - done, count - done)) {
        std::partial_sort(begin + done, begin + end, begin + count, before);
      } else {
        if (!sorted) sort_candidates(begin + done, begin + count, scratch);
        sorted = true;
        end = count;
      }
      if (size_t cut = cut_at_top_p(done, end)) {
        keep = cut;
        break;
      }
      done = end;
      chunk *= 4;
    }
  } else if (!sorted) {
    sort_candidates(begin, begin + count, scratch);
  }
  // Temperature last: exp((l - max) / T) = weight^(1/T), which keeps the order.
  if (p.temperature != 1.0f) {
    const double inv_t = 1.0 / p.temperature;
    for (size_t i = 0; i < keep; ++i)
      candidates[i].value = static_cast<float>(std::pow(static_cast<double>(candidates[i].value), inv_t));
    // A low temperature can underflow the tail to 0; those can never be drawn (sorted, so
    // they are at the end; the first is exactly 1).
    while (keep > 1 && candidates[keep - 1].value == 0.0f) --keep;
  }
  return keep;
}

// Working buffers reused across calls on this thread: a fresh 256 KiB vector per token can
// cost more in page faults (when malloc hands the memory back) than the sorting does.
struct Workspace {
  std::vector<Candidate> candidates, scratch;
};
Workspace& workspace() {
  thread_local Workspace w;
  return w;
}

// The one drawing rule, shared by draw() and sample() so that sample() gives exactly what
// draw(distribution()) would: walk the cumulative probs up to u * (their sum).
template <typename ProbAt>
size_t draw_index(size_t n, ProbAt prob_at, double u) {
  double total = 0.0;
  for (size_t i = 0; i < n; ++i) total += prob_at(i);
  if (!(total > 0.0)) fail("sampler: draw from a distribution with total probability {}", total);
  double target = u * total;
  double cumulative = 0.0;
  size_t last_positive = 0;
  for (size_t i = 0; i < n; ++i) {
    float prob = prob_at(i);
    if (!(prob > 0.0f)) continue;
    cumulative += prob;
    if (target < cumulative) return i;
    last_positive = i;
  }
  return last_positive;  // rounding left target at the very top
}

double sum_weights(const std::vector<Candidate>& candidates, size_t n) {
  double total = 0.0;
  for (size_t i = 0; i < n; ++i) total += candidates[i].value;
  return total;
}

}  // namespace

void SamplerParams::validate() const {
  if (!(temperature >= 0.0f) || !finite(temperature))
    fail("sampler: temperature must be a finite number >= 0, got {}", temperature);
  if (!(top_p > 0.0f && top_p <= 1.0f)) fail("sampler: top_p must be in (0, 1], got {}", top_p);
  if (!(min_p >= 0.0f && min_p <= 1.0f)) fail("sampler: min_p must be in [0, 1], got {}", min_p);
  if (!(repeat_penalty > 0.0f) || !finite(repeat_penalty))
    fail("sampler: repeat_penalty must be a finite number > 0, got {}", repeat_penalty);
  if (repeat_last_n < -1)
    fail("sampler: repeat_last_n must be >= -1 (-1: whole history), got {}", repeat_last_n);
  if (!finite(presence_penalty))
    fail("sampler: presence_penalty must be finite, got {}", presence_penalty);
  if (!finite(frequency_penalty))
    fail("sampler: frequency_penalty must be finite, got {}", frequency_penalty);
}

float TokenDistribution::prob_of(int32_t id) const {
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] == id) return probs[i];
  return 0.0f;
}

Xoshiro256StarStar::Xoshiro256StarStar(uint64_t seed) {
  for (uint64_t& word : state_) word = splitmix64_next(seed);
}

uint64_t Xoshiro256StarStar::next() {
  uint64_t* s = state_;
  uint64_t result = std::rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = std::rotl(s[3], 45);
  return result;
}

double Xoshiro256StarStar::next_double() { return double(next() >> 11) * 0x1.0p-53; }
float Xoshiro256StarStar::next_float() { return float(next() >> 40) * 0x1.0p-24f; }

int32_t argmax(std::span<const float> logits) {
  if (logits.empty()) fail("argmax: empty logits");
  size_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[best]) best = i;
  return int32_t(best);
}

Sampler::Sampler(SamplerParams params) : params_(params), rng_(params.seed) { params_.validate(); }

TokenDistribution Sampler::distribution(std::span<const float> logits,
                                        std::span<const int32_t> history) const {
  Workspace& w = workspace();
  size_t keep = filter(params_, logits, history, w.candidates, w.scratch);
  double kept_total = sum_weights(w.candidates, keep);
  TokenDistribution dist;
  dist.ids.resize(keep);
  dist.probs.resize(keep);
  for (size_t i = 0; i < keep; ++i) {
    dist.ids[i] = w.candidates[i].id;
    dist.probs[i] = float(w.candidates[i].value / kept_total);
  }
  return dist;
}

// Same result as draw(distribution(...)) without building the distribution (two 128 KiB
// vectors when nothing filters a 32000-token vocabulary).
int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> history) {
  Workspace& w = workspace();
  size_t keep = filter(params_, logits, history, w.candidates, w.scratch);
  if (params_.temperature == 0.0f) return w.candidates[0].id;
  double kept_total = sum_weights(w.candidates, keep);
  auto prob_at = [&](size_t i) { return float(w.candidates[i].value / kept_total); };
  return w.candidates[draw_index(keep, prob_at, rng_.next_double())].id;
}

int32_t Sampler::draw(const TokenDistribution& dist) {
  if (dist.ids.empty() || dist.ids.size() != dist.probs.size())
    fail("sampler: draw from a distribution with {} ids and {} probs", dist.ids.size(),
         dist.probs.size());
  auto prob_at = [&](size_t i) { return dist.probs[i]; };
  return dist.ids[draw_index(dist.size(), prob_at, rng_.next_double())];
}

StopStrings::StopStrings(std::vector<std::string> stops) : stops_(std::move(stops)) {
  for (size_t i = 0; i < stops_.size(); ++i)
    if (stops_[i].empty()) fail("stop strings: stop string {} is empty", i);
}

StopStrings::Output StopStrings::push(std::string_view piece) {
  if (stopped()) return {"", true};
  held_.append(piece);

  // The held text contains no complete stop string, so any match ends inside the new piece.
  // Choose the one that completes first (byte-at-a-time semantics); on a tie, the longer.
  size_t best_end = std::string::npos, best_start = 0;
  for (size_t i = 0; i < stops_.size(); ++i) {
    size_t start = held_.find(stops_[i]);
    if (start == std::string::npos) continue;
    size_t end = start + stops_[i].size();
    if (end < best_end || (end == best_end && start < best_start)) {
      best_end = end;
      best_start = start;
      matched_ = int(i);
    }
  }
  if (stopped()) {
    Output out{held_.substr(0, best_start), true};
    held_.clear();
    return out;
  }

  // Hold back the longest tail that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const std::string& stop : stops_) {
    for (size_t len = std::min(stop.size() - 1, held_.size()); len > hold; --len) {
      if (std::string_view(held_).substr(held_.size() - len) ==
          std::string_view(stop).substr(0, len)) {
        hold = len;
        break;
      }
    }
  }
  Output out{held_.substr(0, held_.size() - hold), false};
  held_.erase(0, held_.size() - hold);
  return out;
}

std::string StopStrings::flush() {
  std::string rest;
  rest.swap(held_);
  return stopped() ? std::string() : rest;
}

}  // namespace skiff

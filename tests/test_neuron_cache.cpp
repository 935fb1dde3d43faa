// NeuronCache against a plain std::map model: random insert/erase/touch/evict sequences keep
// the slot maps consistent, every cached bundle keeps the bytes written at its insertion
// (erase moves bundles between slots), and eviction picks the same victims as the model.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "base/error.h"
#include "flash/neuron_cache.h"

namespace skiff::flash {
namespace {

struct Entry {
  int64_t last_used;
  uint32_t generation;  // which insertion wrote the bytes, so stale copies are caught
};

uint8_t pattern_byte(int neuron, uint32_t generation, size_t i) {
  return static_cast<uint8_t>(neuron * 31 + generation * 7 + i * 13 + (i >> 3));
}

void fill(NeuronCache& cache, int slot, int neuron, uint32_t generation) {
  uint8_t* p = cache.data(slot);
  for (size_t i = 0; i < cache.stride(); ++i) p[i] = pattern_byte(neuron, generation, i);
}

// Checks the cache against the model after every operation.
void expect_matches(const NeuronCache& cache, const std::map<int, Entry>& model) {
  ASSERT_NO_THROW(cache.check_invariants());
  ASSERT_EQ(cache.size(), static_cast<int>(model.size()));
  for (int n = 0; n < cache.n_neurons(); ++n) {
    const auto it = model.find(n);
    ASSERT_EQ(cache.contains(n), it != model.end()) << "neuron " << n;
    if (it == model.end()) continue;
    const int slot = cache.slot(n);
    ASSERT_EQ(cache.neuron(slot), n);
    ASSERT_EQ(cache.last_used(slot), it->second.last_used) << "neuron " << n;
    const uint8_t* p = cache.data(slot);
    for (size_t i = 0; i < cache.stride(); ++i) {
      ASSERT_EQ(p[i], pattern_byte(n, it->second.generation, i)) << "neuron " << n << " byte " << i;
    }
  }
}

// The model's choice for evict_lru: oldest last use first, ties by lower slot.
std::set<int> model_lru(const NeuronCache& cache, const std::map<int, Entry>& model, int count,
                        int64_t protect_from) {
  std::vector<std::pair<std::pair<int64_t, int>, int>> candidates;
  for (const auto& [n, e] : model) {
    if (e.last_used < protect_from) candidates.push_back({{e.last_used, cache.slot(n)}, n});
  }
  std::sort(candidates.begin(), candidates.end());
  std::set<int> victims;
  for (int i = 0; i < count && i < static_cast<int>(candidates.size()); ++i) {
    victims.insert(candidates[static_cast<size_t>(i)].second);
  }
  return victims;
}

std::set<int> cached_set(const NeuronCache& cache) {
  std::set<int> s;
  for (int slot = 0; slot < cache.size(); ++slot) s.insert(cache.neuron(slot));
  return s;
}

void run_random_ops(uint32_t seed, int n_neurons, int capacity, size_t stride, int ops) {
  std::mt19937 rng(seed);
  NeuronCache cache(n_neurons, capacity, stride);
  std::map<int, Entry> model;
  uint32_t generation = 0;
  int64_t token = 0;
  auto random_cached = [&] {
    auto it = model.begin();
    std::advance(it, std::uniform_int_distribution<size_t>(0, model.size() - 1)(rng));
    return it->first;
  };
  for (int op = 0; op < ops; ++op) {
    if (rng() % 4 == 0) ++token;  // few distinct tokens, so last-use ties are common
    const uint32_t kind = rng() % 100;
    if (kind < 40 && cache.free_slots() > 0) {
      int n = static_cast<int>(rng() % static_cast<uint32_t>(n_neurons));
      while (model.count(n)) n = (n + 1) % n_neurons;
      const int slot = cache.insert(n, token);
      ASSERT_EQ(slot, static_cast<int>(model.size()));  // appends
      fill(cache, slot, n, ++generation);
      model[n] = {token, generation};
    } else if (kind < 60 && !model.empty()) {
      const int n = random_cached();
      cache.erase(n);
      model.erase(n);
    } else if (kind < 85 && !model.empty()) {
      const int n = random_cached();
      cache.touch(n, token);
      model[n].last_used = token;
    } else if (kind < 95) {
      const int count = static_cast<int>(rng() % 25);
      const int64_t protect_from = token - static_cast<int64_t>(rng() % 6);
      const std::set<int> expected = model_lru(cache, model, count, protect_from);
      const std::set<int> before = cached_set(cache);
      ASSERT_EQ(cache.evict_lru(count, protect_from), static_cast<int>(expected.size()));
      std::set<int> evicted;
      for (int n : before) {
        if (!cache.contains(n)) evicted.insert(n);
      }
      ASSERT_EQ(evicted, expected) << "seed " << seed << " op " << op;
      for (int n : expected) model.erase(n);
    } else if (kind < 99) {
      const int64_t oldest = token - static_cast<int64_t>(rng() % 8);
      int expected = 0;
      for (auto it = model.begin(); it != model.end();) {
        if (it->second.last_used < oldest) {
          it = model.erase(it);
          ++expected;
        } else {
          ++it;
        }
      }
      ASSERT_EQ(cache.evict_older_than(oldest), expected);
    } else {
      cache.clear();
      model.clear();
    }
    expect_matches(cache, model);
    if (::testing::Test::HasFatalFailure()) {
      ADD_FAILURE() << "seed " << seed << " op " << op;
      return;
    }
  }
}

TEST(NeuronCache, RandomOpsMatchModel) {
  for (uint32_t seed = 1; seed <= 5; ++seed) {
    run_random_ops(seed, 300, 100, 40, 4000);
    if (HasFatalFailure()) return;
  }
}

TEST(NeuronCache, RandomOpsNearlyFullCache) {
  // Capacity close to the neuron count: inserts often hit a full cache, erases move many.
  for (uint32_t seed = 11; seed <= 13; ++seed) {
    run_random_ops(seed, 64, 60, 67, 4000);
    if (HasFatalFailure()) return;
  }
}

TEST(NeuronCache, BufferIsAlignedAndAccounted) {
  for (size_t stride : {1, 3, 40, 64, 100, 4096}) {
    NeuronCache cache(50, 17, stride);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(cache.data(0)) % 64, 0u) << "stride " << stride;
    EXPECT_GE(cache.bytes(), 17 * stride);
    EXPECT_EQ(cache.capacity(), 17);
    EXPECT_EQ(cache.free_slots(), 17);
    EXPECT_EQ(cache.stride(), stride);
  }
}

TEST(NeuronCache, EraseMovesLastSlotIntoHole) {
  NeuronCache cache(10, 4, 8);
  for (int n : {3, 5, 7}) fill(cache, cache.insert(n, 0), n, 1);
  cache.erase(3);  // slot 0 <- neuron 7
  EXPECT_EQ(cache.slot(7), 0);
  EXPECT_EQ(cache.slot(5), 1);
  EXPECT_EQ(cache.slot(3), -1);
  EXPECT_EQ(cache.data(0)[0], pattern_byte(7, 1, 0));
  cache.check_invariants();
}

TEST(NeuronCache, SlidingWindow) {
  NeuronCache cache(100, 20, 4);
  for (int t = 0; t < 10; ++t) cache.insert(t * 10, t);  // neuron 10t last used at t
  cache.touch(20, 9);                                    // neuron 20 used again, at 9
  EXPECT_EQ(cache.evict_older_than(5), 4);               // tokens 0, 1, 3, 4
  for (int n : {0, 10, 30, 40}) EXPECT_FALSE(cache.contains(n)) << n;
  for (int n : {20, 50, 60, 70, 80, 90}) EXPECT_TRUE(cache.contains(n)) << n;
  EXPECT_EQ(cache.evict_older_than(5), 0);  // idempotent
  cache.check_invariants();

  // LRU never takes what the window protects: oldest first, tokens 5, 6, 7.
  EXPECT_EQ(cache.evict_lru(3, 8), 3);
  for (int n : {50, 60, 70}) EXPECT_FALSE(cache.contains(n)) << n;
  EXPECT_EQ(cache.evict_lru(10, 8), 0);  // 80 (token 8), 90 and 20 (token 9) are protected
  EXPECT_EQ(cache.size(), 3);
  EXPECT_EQ(cache.evict_lru(10, 9), 1);  // only neuron 80 is older than 9
  EXPECT_FALSE(cache.contains(80));
  EXPECT_EQ(cache.evict_lru(0, 100), 0);
  EXPECT_EQ(cache.evict_lru(1, 100), 1);  // tie at token 9: lower slot first
  EXPECT_EQ(cache.size(), 1);
  cache.check_invariants();
  cache.clear();
  EXPECT_EQ(cache.size(), 0);
  EXPECT_FALSE(cache.contains(20));
  cache.check_invariants();
}

TEST(NeuronCache, LruTieBreakIsLowerSlot) {
  NeuronCache cache(10, 5, 1);
  for (int n : {4, 2, 9, 1}) cache.insert(n, 7);
  EXPECT_EQ(cache.evict_lru(2, 8), 2);
  EXPECT_FALSE(cache.contains(4));  // slot 0
  EXPECT_FALSE(cache.contains(2));  // slot 1
  EXPECT_TRUE(cache.contains(9));
  EXPECT_TRUE(cache.contains(1));
  EXPECT_EQ(cache.size(), 2);
  cache.check_invariants();
}

TEST(NeuronCache, MisuseThrows) {
  NeuronCache cache(8, 2, 16);
  EXPECT_THROW(cache.insert(-1, 0), Error);
  EXPECT_THROW(cache.insert(8, 0), Error);
  cache.insert(1, 0);
  EXPECT_THROW(cache.insert(1, 0), Error);
  cache.insert(2, 0);
  try {
    cache.insert(3, 0);
    FAIL() << "insert into a full cache did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("full"), std::string::npos) << e.what();
  }
  EXPECT_THROW(cache.erase(3), Error);
  EXPECT_THROW(cache.erase(-1), Error);
  EXPECT_THROW(cache.erase(8), Error);
  EXPECT_EQ(cache.size(), 2);  // failed calls change nothing
  cache.check_invariants();
  EXPECT_THROW(NeuronCache(-1, 2, 4), Error);
}

}  // namespace
}  // namespace skiff::flash

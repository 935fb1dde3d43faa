// NeuronCache keeps a layer's cached FFN bundles packed in the first size() slots so the FFN
// can run over contiguous rows; erase fills the hole with the last slot's bundle (one copy).
// Eviction picks victims by last use with nth_element, linear in the cache size, because it
// runs for every layer on every token.
#include "flash/neuron_cache.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "base/error.h"

namespace skiff::flash {
namespace {

constexpr size_t kAlignment = 64;

}  // namespace

NeuronCache::NeuronCache(int n_neurons, int capacity, size_t stride)
    : n_neurons_(n_neurons), capacity_(capacity), stride_(stride) {
  if (n_neurons < 0 || capacity < 0) {
    fail("neuron cache: bad shape (n_neurons {}, capacity {})", n_neurons, capacity);
  }
  storage_.resize(static_cast<size_t>(capacity) * stride + kAlignment);
  const auto address = reinterpret_cast<uintptr_t>(storage_.data());
  buffer_ = storage_.data() + (kAlignment - address % kAlignment) % kAlignment;
  slot_of_.assign(static_cast<size_t>(n_neurons), -1);
  neuron_of_.assign(static_cast<size_t>(capacity), -1);
  last_used_.assign(static_cast<size_t>(capacity), 0);
}

size_t NeuronCache::bytes() const {
  return storage_.size() + slot_of_.size() * sizeof(int) + neuron_of_.size() * sizeof(int) +
         last_used_.size() * sizeof(int64_t);
}

int NeuronCache::insert(int neuron, int64_t token) {
  if (neuron < 0 || neuron >= n_neurons_) {
    fail("neuron cache: insert of neuron {} outside 0..{}", neuron, n_neurons_ - 1);
  }
  if (contains(neuron)) fail("neuron cache: neuron {} is already cached", neuron);
  if (size_ >= capacity_) {
    fail("neuron cache: insert of neuron {} into a full cache ({} slots)", neuron, capacity_);
  }
  const int slot = size_++;
  slot_of_[static_cast<size_t>(neuron)] = slot;
  neuron_of_[static_cast<size_t>(slot)] = neuron;
  last_used_[static_cast<size_t>(slot)] = token;
  return slot;
}

void NeuronCache::erase(int neuron) {
  if (neuron < 0 || neuron >= n_neurons_) {
    fail("neuron cache: erase of neuron {} outside 0..{}", neuron, n_neurons_ - 1);
  }
  const int hole = slot(neuron);
  if (hole < 0) fail("neuron cache: erase of neuron {}, which is not cached", neuron);
  const int last = --size_;
  if (hole != last) {
    const int moved = neuron_of_[static_cast<size_t>(last)];
    std::memcpy(data(hole), data(last), stride_);
    neuron_of_[static_cast<size_t>(hole)] = moved;
    last_used_[static_cast<size_t>(hole)] = last_used_[static_cast<size_t>(last)];
    slot_of_[static_cast<size_t>(moved)] = hole;
  }
  slot_of_[static_cast<size_t>(neuron)] = -1;
  neuron_of_[static_cast<size_t>(last)] = -1;
}

int NeuronCache::evict_older_than(int64_t oldest_token) {
  // Walk down from the end: erasing slot s only moves the bundle from a slot above s, which
  // was already checked, so every slot is seen exactly once.
  int erased = 0;
  for (int s = size_ - 1; s >= 0; --s) {
    if (last_used_[static_cast<size_t>(s)] < oldest_token) {
      erase(neuron_of_[static_cast<size_t>(s)]);
      ++erased;
    }
  }
  return erased;
}

int NeuronCache::evict_lru(int count, int64_t protect_from) {
  if (count <= 0) return 0;
  // Candidates as (last use, slot): ordering by the pair breaks ties by lower slot.
  std::vector<std::pair<int64_t, int>> candidates;
  candidates.reserve(static_cast<size_t>(size_));
  for (int s = 0; s < size_; ++s) {
    const int64_t used = last_used_[static_cast<size_t>(s)];
    if (used < protect_from) candidates.emplace_back(used, s);
  }
  const size_t n = std::min(candidates.size(), static_cast<size_t>(count));
  if (n < candidates.size()) {
    std::nth_element(candidates.begin(), candidates.begin() + static_cast<ptrdiff_t>(n),
                     candidates.end());
  }
  // Resolve victims to neuron ids first: erasing moves bundles between slots.
  std::vector<int> victims(n);
  for (size_t i = 0; i < n; ++i) {
    victims[i] = neuron_of_[static_cast<size_t>(candidates[i].second)];
  }
  for (int neuron : victims) erase(neuron);
  return static_cast<int>(n);
}

void NeuronCache::clear() {
  for (int s = 0; s < size_; ++s) {
    slot_of_[static_cast<size_t>(neuron_of_[static_cast<size_t>(s)])] = -1;
    neuron_of_[static_cast<size_t>(s)] = -1;
  }
  size_ = 0;
}

void NeuronCache::check_invariants() const {
  if (size_ < 0 || size_ > capacity_) {
    fail("neuron cache: size {} outside 0..{}", size_, capacity_);
  }
  if (reinterpret_cast<uintptr_t>(buffer_) % kAlignment != 0) {
    fail("neuron cache: slot buffer is not {}-byte aligned", kAlignment);
  }
  for (int s = 0; s < size_; ++s) {
    const int neuron = neuron_of_[static_cast<size_t>(s)];
    if (neuron < 0 || neuron >= n_neurons_) {
      fail("neuron cache: slot {} holds neuron {} outside 0..{}", s, neuron, n_neurons_ - 1);
    }
    // slot_of_ maps each neuron to one slot, so inverse maps also rule out duplicates.
    if (slot_of_[static_cast<size_t>(neuron)] != s) {
      fail(
          "neuron cache: slot {} holds neuron {} (a duplicate or stale entry), but the "
          "neuron maps to slot {}",
          s, neuron, slot_of_[static_cast<size_t>(neuron)]);
    }
  }
  int mapped = 0;
  for (int neuron = 0; neuron < n_neurons_; ++neuron) {
    const int s = slot_of_[static_cast<size_t>(neuron)];
    if (s < 0) continue;
    if (s >= size_) {
      fail("neuron cache: neuron {} maps to slot {}, not below size {}", neuron, s, size_);
    }
    if (neuron_of_[static_cast<size_t>(s)] != neuron) {
      fail("neuron cache: neuron {} maps to slot {}, which holds neuron {}", neuron, s,
           neuron_of_[static_cast<size_t>(s)]);
    }
    ++mapped;
  }
  if (mapped != size_) fail("neuron cache: {} neurons mapped but size is {}", mapped, size_);
}

}  // namespace skiff::flash

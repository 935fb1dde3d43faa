// One layer's DRAM cache of FFN neuron bundles (LLM in a Flash, section 3.3): a buffer of
// `capacity` slots of `stride` bytes allocated once, whose first size() slots are in use,
// so the FFN runs over contiguous rows. Insert appends at slot size(); erase moves the
// bundle in the last slot into the hole (one copy, no shifting). Each cached neuron
// remembers the last token that used it, for the sliding window ("neurons used in the last
// k tokens stay").
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace skiff::flash {

class NeuronCache {
 public:
  // n_neurons: the layer's FFN width (valid ids are 0..n_neurons-1).
  NeuronCache(int n_neurons, int capacity, size_t stride);

  int n_neurons() const { return n_neurons_; }
  int capacity() const { return capacity_; }
  int size() const { return size_; }
  int free_slots() const { return capacity_ - size_; }
  size_t stride() const { return stride_; }
  size_t bytes() const;  // the slot buffer plus bookkeeping, for budget accounting

  bool contains(int neuron) const { return slot_of_[static_cast<size_t>(neuron)] >= 0; }
  int slot(int neuron) const { return slot_of_[static_cast<size_t>(neuron)]; }  // -1: absent
  int neuron(int slot) const { return neuron_of_[static_cast<size_t>(slot)]; }
  uint8_t* data(int slot) { return buffer_ + static_cast<size_t>(slot) * stride_; }
  const uint8_t* data(int slot) const { return buffer_ + static_cast<size_t>(slot) * stride_; }

  // Appends an absent neuron (requires free_slots() > 0) and returns its slot; the caller
  // fills data(slot). The new neuron's last use is `token`.
  int insert(int neuron, int64_t token);
  // Removes a present neuron; the last slot's bundle moves into its slot.
  void erase(int neuron);
  // Records that `neuron` (present) was used at `token`.
  void touch(int neuron, int64_t token) { last_used_[static_cast<size_t>(slot(neuron))] = token; }
  int64_t last_used(int slot) const { return last_used_[static_cast<size_t>(slot)]; }

  // Erases every neuron whose last use is before `oldest_token`; returns how many.
  int evict_older_than(int64_t oldest_token);
  // Erases up to `count` neurons with the oldest last use, never one used at or after
  // `protect_from`; returns how many were erased.
  int evict_lru(int count, int64_t protect_from);
  void clear();

  // Throws Error if the maps and slots disagree (tests).
  void check_invariants() const;

 private:
  int n_neurons_, capacity_, size_ = 0;
  size_t stride_;
  std::vector<uint8_t> storage_;    // capacity * stride + alignment slack
  uint8_t* buffer_ = nullptr;       // 64-byte aligned start inside storage_
  std::vector<int> slot_of_;        // [n_neurons] -> slot or -1
  std::vector<int> neuron_of_;      // [capacity] -> neuron (valid below size_)
  std::vector<int64_t> last_used_;  // [capacity]
};

}  // namespace skiff::flash

// Fixed-width fields of a binary file header at byte offsets (x86-64: little-endian, as the
// files are): the store, index and bundle formats read and write theirs through these.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace skiff {

template <typename T>
T get_le(std::span<const uint8_t> bytes, size_t offset) {
  T v;
  std::memcpy(&v, bytes.data() + offset, sizeof(T));
  return v;
}

template <typename T>
void put_le(std::vector<uint8_t>& bytes, size_t offset, T v) {
  std::memcpy(bytes.data() + offset, &v, sizeof(T));
}

}  // namespace skiff

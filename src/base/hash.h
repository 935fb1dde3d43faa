// Hashes. FNV-1a, 64 bits: the checksum of skiff's own file formats (flash packs, memory stores) and
// the cheap hash behind model fingerprints. Not cryptographic: it catches corruption and
// mix-ups, not tampering.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace skiff {

inline constexpr uint64_t kFnv1aBasis = 14695981039346656037ull;

// Continues hash `h` over the bytes (start with kFnv1aBasis).
inline uint64_t fnv1a(uint64_t h, std::span<const uint8_t> bytes) {
  for (uint8_t b : bytes) h = (h ^ b) * 1099511628211ull;
  return h;
}
inline uint64_t fnv1a(std::span<const uint8_t> bytes) { return fnv1a(kFnv1aBasis, bytes); }

// SplitMix64 (Steele, Lea & Flood) of x: its output for the state x, a well-mixed 64-bit
// hash of an integer, fixed on every machine (counter-based randomness, hashed buckets,
// seeding other generators).
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace skiff

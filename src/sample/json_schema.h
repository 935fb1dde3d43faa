// The compiled form of a JSON schema for JsonConstraint (internal to src/sample): a graph of
// nodes, each a kind of JSON value; unions pick their alternative by the value's first byte,
// so the automaton never has to follow two alternatives at once.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "base/error.h"

namespace skiff::json_constraint_detail {

constexpr uint16_t kNone = 0xffff;
constexpr size_t kMaxNodes = 4096;
constexpr size_t kMaxLiteralBytes = size_t{1} << 20;
constexpr size_t kMaxProperties = 1024;

enum class Kind : uint8_t { kString, kNumber, kInteger, kLiteral, kArray, kObject, kMap, kUnion };

// A set of byte strings, sorted; a frame matching it keeps the range [lo, hi) of those that
// start with the bytes seen so far.
using LiteralSet = std::vector<std::string>;

struct Node {
  Kind kind = Kind::kString;
  LiteralSet literals;  // kLiteral
  // kArray
  uint16_t items = kNone;
  uint32_t min_items = 0;
  uint32_t max_items = std::numeric_limits<uint32_t>::max();
  // kObject: properties in order; at position p the next key is one of key_sets[p] (the
  // properties from p up to the first required one), key_props maps them back.
  std::vector<uint16_t> prop_nodes;
  std::vector<LiteralSet> key_sets;
  std::vector<std::vector<uint16_t>> key_props;
  std::vector<bool> optional_from;  // size n + 1: every property >= p is optional
  // kMap: the values' node; kNone: only {}.
  uint16_t values = kNone;
  // kUnion: the alternative for each first byte (kNone: refused).
  std::vector<uint16_t> alternatives;
  std::array<uint16_t, 256> dispatch{};
};

struct Schema {
  std::vector<Node> nodes;
  uint16_t root = kNone;
  size_t literal_bytes = 0;

  // Shared nodes every schema has.
  static constexpr uint16_t kString = 0, kNumber = 1, kInteger = 2, kBoolean = 3, kNull = 4,
                            kAnyObject = 5, kAny = 6, kAnyArray = 7;

  Schema() {
    add(Kind::kString);
    add(Kind::kNumber);
    add(Kind::kInteger);
    add_literals({"false", "true"});
    add_literals({"null"});
    add(Kind::kMap);    // kAnyObject
    add(Kind::kUnion);  // kAny
    add(Kind::kArray);  // kAnyArray
    nodes[kAnyObject].values = kAny;
    nodes[kAnyArray].items = kAny;
    Node& any = nodes[kAny];
    any.alternatives = {kAnyObject, kAnyArray, kString, kNumber, kBoolean, kNull};
    any.dispatch.fill(kNone);
    any.dispatch['{'] = kAnyObject;
    any.dispatch['['] = kAnyArray;
    any.dispatch['"'] = kString;
    any.dispatch['-'] = kNumber;
    for (int c = '0'; c <= '9'; ++c) any.dispatch[c] = kNumber;
    any.dispatch['t'] = any.dispatch['f'] = kBoolean;
    any.dispatch['n'] = kNull;
  }

  uint16_t add(Kind kind) {
    if (nodes.size() >= kMaxNodes) fail("json schema: too large (more than {} nodes)", kMaxNodes);
    nodes.emplace_back();
    nodes.back().kind = kind;
    return static_cast<uint16_t>(nodes.size() - 1);
  }
  void count_bytes(size_t n) {
    literal_bytes += n;
    if (literal_bytes > kMaxLiteralBytes) {
      fail("json schema: too large (more than {} bytes of names and values)", kMaxLiteralBytes);
    }
  }
  uint16_t add_literals(LiteralSet literals) {
    std::sort(literals.begin(), literals.end());
    literals.erase(std::unique(literals.begin(), literals.end()), literals.end());
    for (const std::string& s : literals) count_bytes(s.size());
    uint16_t id = add(Kind::kLiteral);
    nodes[id].literals = std::move(literals);
    return id;
  }
};

// Narrows [lo, hi) of `set` (all sharing their first `pos` bytes) to those whose byte `pos`
// is `c`; false (range unchanged) when none has. The string of length `pos`, if any, is lo.
bool narrow(const LiteralSet& set, uint32_t& lo, uint32_t& hi, uint32_t pos, uint8_t c);

// Throw Error naming the keyword and path for anything outside the supported subset.
std::shared_ptr<const Schema> compile_schema(const nlohmann::ordered_json& schema);
std::shared_ptr<const Schema> compile_schema(const nlohmann::json& schema);

}  // namespace skiff::json_constraint_detail

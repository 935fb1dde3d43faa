// The schema is compiled into a graph of nodes (object, map, array, string, number, literal
// set, union); the automaton's stack holds one frame per value being written. A frame whose
// value may end without a closing byte (a number, a literal that is a prefix of another)
// hands a byte it cannot take back to its parent ("pop and retry").
#include "sample/json_constraint.h"

#include <algorithm>
#include <limits>
#include <string>

#include "base/error.h"
#include "sample/json_schema.h"
#include "tokenizer/tokenizer.h"

namespace skiff {
namespace json_constraint_detail {

constexpr int kMaxIntDigits = 16;
constexpr int kMaxFracDigits = 16;
constexpr int kMaxExpDigits = 2;  // 1e99 at most: nlohmann refuses numbers that overflow a double

// ------------------------------------------------------------------------------------------
// The automaton.

enum Mode : uint8_t {
  kStart,  // nothing of the value seen yet (every kind)
  // string: aux = UTF-8 continuation bytes still due, a..b their range / aux = hex digits
  // seen, a = their value, b = 1 when a low surrogate must follow
  kStrBody,
  kStrEscape,
  kStrHex,
  kStrLowSlash,
  kStrLowU,
  kStrUtf8,
  // number: a = digits in the current part
  kNumMinus,
  kNumZero,
  kNumInt,
  kNumDot,
  kNumFrac,
  kNumExp,
  kNumExpSign,
  kNumExpDigits,
  // literal set: a..b the range still possible, c = bytes matched
  kLitBody,
  // array: a = items begun
  kArrFirst,
  kArrAfterItem,
  kArrAfterComma,
  kArrAfterSpace,
  // object with properties: kObjKey a = lo | hi << 16, b = bytes matched, c = position;
  // otherwise c = the property being written
  kObjFirst,
  kObjKey,
  kObjColon,
  kObjAfterColon,
  kObjAfterColonSpace,
  kObjAfterValue,
  kObjAfterComma,
  kObjAfterSpace,
  // map (free keys)
  kMapFirst,
  kMapColon,
  kMapAfterColon,
  kMapAfterColonSpace,
  kMapAfterValue,
  kMapAfterComma,
  kMapAfterSpace,
};

enum class Step { kConsumed, kReject, kPop, kRetry };

bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }

int hex_value(uint8_t c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool literal_done(const Node& n, const Frame& f) {
  return f.mode == kLitBody && n.literals[f.a].size() == f.c;
}

// Frames whose value may end here without a closing byte.
bool can_end(const Schema& s, const Frame& f) {
  switch (f.mode) {
    case kNumZero:
    case kNumInt:
    case kNumFrac:
    case kNumExpDigits:
      return true;
    case kLitBody:
      return literal_done(s.nodes[f.node], f);
    default:
      return false;
  }
}

Step step_string(Frame& f, uint8_t c) {
  switch (f.mode) {
    case kStart:
      if (c != '"') return Step::kReject;
      f.mode = kStrBody;
      return Step::kConsumed;
    case kStrBody:
      if (c == '"') return Step::kPop;  // caller pops after consuming, see below
      if (c == '\\') {
        f.mode = kStrEscape;
        return Step::kConsumed;
      }
      if (c < 0x20) return Step::kReject;
      if (c < 0x80) return Step::kConsumed;
      f.a = 0x80, f.b = 0xbf;
      if (c >= 0xc2 && c <= 0xdf)
        f.aux = 1;
      else if (c == 0xe0)
        f.aux = 2, f.a = 0xa0;
      else if ((c >= 0xe1 && c <= 0xec) || c == 0xee || c == 0xef)
        f.aux = 2;
      else if (c == 0xed)
        f.aux = 2, f.b = 0x9f;  // no UTF-16 surrogates
      else if (c == 0xf0)
        f.aux = 3, f.a = 0x90;
      else if (c >= 0xf1 && c <= 0xf3)
        f.aux = 3;
      else if (c == 0xf4)
        f.aux = 3, f.b = 0x8f;  // nothing past U+10FFFF
      else
        return Step::kReject;
      f.mode = kStrUtf8;
      return Step::kConsumed;
    case kStrUtf8:
      if (c < f.a || c > f.b) return Step::kReject;
      f.a = 0x80, f.b = 0xbf;
      if (--f.aux == 0) f.mode = kStrBody;
      return Step::kConsumed;
    case kStrEscape:
      if (c == 'u') {
        f.mode = kStrHex, f.aux = 0, f.a = 0, f.b = 0;
        return Step::kConsumed;
      }
      if (c != '"' && c != '\\' && c != '/' && c != 'b' && c != 'f' && c != 'n' && c != 'r' &&
          c != 't') {
        return Step::kReject;
      }
      f.mode = kStrBody;
      return Step::kConsumed;
    case kStrHex: {
      int h = hex_value(c);
      if (h < 0) return Step::kReject;
      uint32_t v = f.a * 16 + static_cast<uint32_t>(h);
      int k = f.aux + 1;
      if (f.b) {  // a low surrogate DC00..DFFF must come
        if (k == 1 && v != 0xd) return Step::kReject;
        if (k >= 2 && ((v >> (4 * (k - 2))) < 0xdc || (v >> (4 * (k - 2))) > 0xdf))
          return Step::kReject;
      } else if (k >= 2 && (v >> (4 * (k - 2))) >= 0xdc && (v >> (4 * (k - 2))) <= 0xdf) {
        return Step::kReject;  // a lone low surrogate
      }
      if (k < 4) {
        f.aux = static_cast<uint8_t>(k), f.a = v;
      } else {
        f.mode = !f.b && v >= 0xd800 && v <= 0xdbff ? kStrLowSlash : kStrBody;
      }
      return Step::kConsumed;
    }
    case kStrLowSlash:
      if (c != '\\') return Step::kReject;
      f.mode = kStrLowU;
      return Step::kConsumed;
    case kStrLowU:
      if (c != 'u') return Step::kReject;
      f.mode = kStrHex, f.aux = 0, f.a = 0, f.b = 1;
      return Step::kConsumed;
    default:
      return Step::kReject;
  }
}

Step step_number(Frame& f, uint8_t c, bool integer) {
  auto start_int = [&]() {
    if (c == '0') {
      f.mode = kNumZero;
      return Step::kConsumed;
    }
    if (is_digit(c)) {
      f.mode = kNumInt, f.a = 1;
      return Step::kConsumed;
    }
    return Step::kReject;
  };
  auto after_int = [&]() {
    if (!integer && c == '.') {
      f.mode = kNumDot;
      return Step::kConsumed;
    }
    if (!integer && (c == 'e' || c == 'E')) {
      f.mode = kNumExp;
      return Step::kConsumed;
    }
    return Step::kPop;
  };
  switch (f.mode) {
    case kStart:
      if (c == '-') {
        f.mode = kNumMinus;
        return Step::kConsumed;
      }
      return start_int();
    case kNumMinus:
      return start_int();
    case kNumZero:
      return after_int();
    case kNumInt:
      if (is_digit(c)) {
        if (f.a >= kMaxIntDigits) return Step::kReject;
        ++f.a;
        return Step::kConsumed;
      }
      return after_int();
    case kNumDot:
      if (!is_digit(c)) return Step::kReject;
      f.mode = kNumFrac, f.a = 1;
      return Step::kConsumed;
    case kNumFrac:
      if (is_digit(c)) {
        if (f.a >= kMaxFracDigits) return Step::kReject;
        ++f.a;
        return Step::kConsumed;
      }
      if (c == 'e' || c == 'E') {
        f.mode = kNumExp;
        return Step::kConsumed;
      }
      return Step::kPop;
    case kNumExp:
      if (c == '+' || c == '-') {
        f.mode = kNumExpSign;
        return Step::kConsumed;
      }
      [[fallthrough]];
    case kNumExpSign:
      if (!is_digit(c)) return Step::kReject;
      f.mode = kNumExpDigits, f.a = 1;
      return Step::kConsumed;
    case kNumExpDigits:
      if (is_digit(c)) {
        if (f.a >= kMaxExpDigits) return Step::kReject;
        ++f.a;
        return Step::kConsumed;
      }
      return Step::kPop;
    default:
      return Step::kReject;
  }
}

}  // namespace json_constraint_detail

using namespace json_constraint_detail;

void JsonConstraint::State::copy_from(const State& other) {
  depth = other.depth;
  std::copy(other.frames, other.frames + other.depth, frames);
}

JsonConstraint::JsonConstraint(std::shared_ptr<const Schema> schema) : schema_(std::move(schema)) {
  reset();
}

void JsonConstraint::reset() {
  state_.depth = 1;
  state_.frames[0] = Frame{schema_->root, kStart, 0, 0, 0, 0};
}

JsonConstraint JsonConstraint::any_object() {
  auto schema = std::make_shared<Schema>();
  schema->root = Schema::kAnyObject;
  return JsonConstraint(std::move(schema));
}

JsonConstraint JsonConstraint::from_schema(const nlohmann::ordered_json& schema) {
  return JsonConstraint(compile_schema(schema));
}

JsonConstraint JsonConstraint::from_schema(const nlohmann::json& schema) {
  return JsonConstraint(compile_schema(schema));
}

bool JsonConstraint::step(State& state, uint8_t c) const {
  const Schema& s = *schema_;
  // Pushes a child value frame; the byte is then offered to it.
  auto push = [&](uint16_t node) {
    if (state.depth >= kMaxFrames) return Step::kReject;
    state.frames[state.depth++] = Frame{node, kStart, 0, 0, 0, 0};
    return Step::kRetry;
  };
  for (;;) {
    if (state.depth == 0) return false;  // the document is finished
    Frame& f = state.frames[state.depth - 1];
    const Node& n = s.nodes[f.node];
    Step r = Step::kReject;
    bool closes = false;  // the byte, when consumed, ends this value
    switch (n.kind) {
      case Kind::kString:
        r = step_string(f, c);
        if (r == Step::kPop) r = Step::kConsumed, closes = true;  // the closing quote
        break;
      case Kind::kNumber:
      case Kind::kInteger:
        r = step_number(f, c, n.kind == Kind::kInteger);
        break;
      case Kind::kLiteral:
        if (f.mode == kStart)
          f.mode = kLitBody, f.a = 0, f.b = static_cast<uint32_t>(n.literals.size()), f.c = 0;
        if (narrow(n.literals, f.a, f.b, f.c, c)) {
          ++f.c;
          r = Step::kConsumed;
          closes = f.b - f.a == 1 && n.literals[f.a].size() == f.c;
        } else {
          r = literal_done(n, f) ? Step::kPop : Step::kReject;
        }
        break;
      case Kind::kUnion:
        if (n.dispatch[c] == kNone) return false;
        f = Frame{n.dispatch[c], kStart, 0, 0, 0, 0};
        r = Step::kRetry;
        break;
      case Kind::kArray:
        switch (f.mode) {
          case kStart:
            if (c == '[') f.mode = kArrFirst, r = Step::kConsumed;
            break;
          case kArrFirst:
            if (c == ']' && n.min_items == 0)
              r = Step::kConsumed, closes = true;
            else if (n.max_items > 0)
              f.mode = kArrAfterItem, f.a = 1, r = push(n.items);
            break;
          case kArrAfterItem:
            if (c == ',' && f.a < n.max_items)
              f.mode = kArrAfterComma, r = Step::kConsumed;
            else if (c == ']' && f.a >= n.min_items)
              r = Step::kConsumed, closes = true;
            break;
          case kArrAfterComma:
            if (c == ' ') {
              f.mode = kArrAfterSpace, r = Step::kConsumed;
              break;
            }
            [[fallthrough]];
          case kArrAfterSpace:
            f.mode = kArrAfterItem, ++f.a, r = push(n.items);
            break;
        }
        break;
      case Kind::kObject: {
        auto begin_key = [&](uint32_t position) {
          f.mode = kObjKey;
          f.a = static_cast<uint32_t>(n.key_sets[position].size()) << 16;
          f.b = 0, f.c = position;
          return Step::kRetry;
        };
        switch (f.mode) {
          case kStart:
            if (c == '{') f.mode = kObjFirst, r = Step::kConsumed;
            break;
          case kObjFirst:
            if (c == '}' && n.optional_from[0])
              r = Step::kConsumed, closes = true;
            else if (c == '"')
              r = begin_key(0);
            break;
          case kObjKey: {
            uint32_t lo = f.a & 0xffff, hi = f.a >> 16;
            const LiteralSet& keys = n.key_sets[f.c];
            if (!narrow(keys, lo, hi, f.b, c)) break;
            f.a = lo | hi << 16, ++f.b;
            if (keys[lo].size() == f.b) f.mode = kObjColon, f.c = n.key_props[f.c][lo];
            r = Step::kConsumed;
            break;
          }
          case kObjColon:
            if (c == ':') f.mode = kObjAfterColon, r = Step::kConsumed;
            break;
          case kObjAfterColon:
            if (c == ' ') {
              f.mode = kObjAfterColonSpace, r = Step::kConsumed;
              break;
            }
            [[fallthrough]];
          case kObjAfterColonSpace:
            f.mode = kObjAfterValue, r = push(n.prop_nodes[f.c]);
            break;
          case kObjAfterValue:
            if (c == ',' && f.c + 1 < n.prop_nodes.size())
              f.mode = kObjAfterComma, ++f.c, r = Step::kConsumed;
            else if (c == '}' && n.optional_from[f.c + 1])
              r = Step::kConsumed, closes = true;
            break;
          case kObjAfterComma:
            if (c == ' ') {
              f.mode = kObjAfterSpace, r = Step::kConsumed;
              break;
            }
            [[fallthrough]];
          case kObjAfterSpace:
            if (c == '"') r = begin_key(f.c);
            break;
        }
        break;
      }
      case Kind::kMap:
        switch (f.mode) {
          case kStart:
            if (c == '{') f.mode = kMapFirst, r = Step::kConsumed;
            break;
          case kMapFirst:
            if (c == '}')
              r = Step::kConsumed, closes = true;
            else if (c == '"' && n.values != kNone)
              f.mode = kMapColon, r = push(Schema::kString);
            break;
          case kMapColon:
            if (c == ':') f.mode = kMapAfterColon, r = Step::kConsumed;
            break;
          case kMapAfterColon:
            if (c == ' ') {
              f.mode = kMapAfterColonSpace, r = Step::kConsumed;
              break;
            }
            [[fallthrough]];
          case kMapAfterColonSpace:
            f.mode = kMapAfterValue, r = push(n.values);
            break;
          case kMapAfterValue:
            if (c == ',')
              f.mode = kMapAfterComma, r = Step::kConsumed;
            else if (c == '}')
              r = Step::kConsumed, closes = true;
            break;
          case kMapAfterComma:
            if (c == ' ') {
              f.mode = kMapAfterSpace, r = Step::kConsumed;
              break;
            }
            [[fallthrough]];
          case kMapAfterSpace:
            if (c == '"') f.mode = kMapColon, r = push(Schema::kString);
            break;
        }
        break;
    }
    switch (r) {
      case Step::kConsumed:
        if (closes) --state.depth;
        return true;
      case Step::kReject:
        return false;
      case Step::kPop:
        --state.depth;
        break;
      case Step::kRetry:
        break;
    }
  }
}

bool JsonConstraint::can_accept(std::string_view bytes) const {
  State copy;
  copy.copy_from(state_);
  for (char c : bytes) {
    if (!step(copy, static_cast<uint8_t>(c))) return false;
  }
  return true;
}

void JsonConstraint::accept(std::string_view bytes) {
  State copy;
  copy.copy_from(state_);
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (!step(copy, static_cast<uint8_t>(bytes[i]))) {
      fail("json constraint: byte {} of the {}-byte piece (0x{:02x}) cannot continue the text", i,
           bytes.size(), static_cast<uint8_t>(bytes[i]));
    }
  }
  state_.copy_from(copy);
}

bool JsonConstraint::complete() const {
  return state_.depth == 0 || (state_.depth == 1 && can_end(*schema_, state_.frames[0]));
}

// ------------------------------------------------------------------------------------------
// The token mask.

JsonTokenMask::JsonTokenMask(const Tokenizer& tokenizer) : vocab_size_(tokenizer.vocab().size()) {
  std::vector<std::pair<std::string, int32_t>> tokens;
  for (int32_t id = 0; id < vocab_size_; ++id) {
    std::string bytes = tokenizer.token_bytes(id);
    if (tokenizer.is_eog(id))
      eog_ids_.push_back(id);
    else if (bytes.empty())
      never_ids_.push_back(id);
    else
      tokens.emplace_back(std::move(bytes), id);
  }
  std::sort(tokens.begin(), tokens.end());
  // Preorder trie from the sorted strings: a path stack of open nodes; a node closes when the
  // next string leaves its subtree.
  std::vector<uint32_t> open;  // node indices along the current path
  auto close_to = [&](size_t depth) {
    while (open.size() > depth) {
      TrieNode& node = trie_[open.back()];
      node.end = static_cast<uint32_t>(trie_.size());
      node.token_end = static_cast<uint32_t>(sorted_ids_.size());
      open.pop_back();
    }
  };
  const std::string* previous = nullptr;
  for (auto& [bytes, id] : tokens) {
    size_t common = 0;
    if (previous) {
      while (common < previous->size() && common < bytes.size() &&
             (*previous)[common] == bytes[common]) {
        ++common;
      }
    }
    close_to(common);
    for (size_t d = open.size(); d < bytes.size(); ++d) {
      open.push_back(static_cast<uint32_t>(trie_.size()));
      trie_.push_back(TrieNode{0, static_cast<uint32_t>(sorted_ids_.size()), 0,
                               static_cast<uint16_t>(std::min<size_t>(d + 1, 0xffff)),
                               static_cast<uint8_t>(bytes[d])});
    }
    sorted_ids_.push_back(id);
    max_depth_ = std::max(max_depth_, static_cast<int>(bytes.size()));
    previous = &bytes;
  }
  close_to(0);
  if (max_depth_ >= 0xffff) fail("json mask: a token of {} bytes is too long", max_depth_);
}

void JsonTokenMask::apply(const JsonConstraint& constraint, std::span<float> logits) const {
  if (logits.size() < static_cast<size_t>(vocab_size_)) {
    fail("json mask: {} logits for a vocabulary of {} tokens", logits.size(), vocab_size_);
  }
  constexpr float kNever = -std::numeric_limits<float>::infinity();
  for (size_t i = static_cast<size_t>(vocab_size_); i < logits.size(); ++i) logits[i] = kNever;
  for (int32_t id : never_ids_) logits[static_cast<size_t>(id)] = kNever;
  if (!constraint.complete()) {
    for (int32_t id : eog_ids_) logits[static_cast<size_t>(id)] = kNever;
  }
  // states[d]: the automaton after the first d bytes of the current trie path. Inside a
  // string, a plain byte leaves the state as it is: such a node shares its parent's state
  // (no copy, no step), which keeps the string case, where most tokens pass, fast.
  std::vector<JsonConstraint::State> storage(static_cast<size_t>(max_depth_) + 1);
  std::vector<const JsonConstraint::State*> states(static_cast<size_t>(max_depth_) + 1);
  storage[0].copy_from(constraint.state_);
  states[0] = &storage[0];
  const size_t count = trie_.size();
  for (size_t i = 0; i < count;) {
    const TrieNode& node = trie_[i];
    const JsonConstraint::State& parent = *states[node.depth - 1];
    const uint8_t c = node.byte;
    if (parent.depth > 0 && parent.frames[parent.depth - 1].mode == kStrBody && c >= 0x20 &&
        c < 0x80 && c != '"' && c != '\\') {
      states[node.depth] = &parent;
      ++i;
      continue;
    }
    JsonConstraint::State& state = storage[node.depth];
    state.copy_from(parent);
    if (constraint.step(state, node.byte)) {
      states[node.depth] = &state;
      ++i;
      continue;
    }
    for (uint32_t t = node.token_begin; t < node.token_end; ++t) {
      logits[static_cast<size_t>(sorted_ids_[t])] = kNever;
    }
    i = node.end;
  }
}

}  // namespace skiff

// Constrained decoding for JSON replies (OpenAI response_format json_object / json_schema): a
// byte-level pushdown automaton over the JSON texts valid for a schema, and a token mask built
// on it. Invariant: every prefix the automaton accepts can still be completed to an accepted
// document, so sampling under the mask never dead-ends (the vocabulary has byte tokens).
//
// The accepted texts are a deliberately narrow form of JSON, so the model cannot wander:
// - compact: no whitespace except at most one optional space after ':' and ','; nothing
//   before or after the value;
// - objects with "properties": keys in the schema's order (pass nlohmann::ordered_json to
//   keep it); required ones always, optional ones may be skipped; no other keys, even when
//   additionalProperties is absent or true. Objects without "properties": any keys, values
//   valid for additionalProperties (any JSON when absent/true; only {} when false);
// - numbers -?(0|[1-9][0-9]{0,15})(.[0-9]{1,16})?([eE][+-]?[0-9]{1,2})?, integers without
//   fraction or exponent;
// - strings: any JSON string: well-formed UTF-8, escapes, \uXXXX with surrogates paired;
// - enum / const values exactly as nlohmann's compact dump() writes them;
// - nesting at most kMaxFrames frames deep (one per open container, plus the value being
//   written: 48 nested containers; a deeper '{' or '[' is refused, closing always works).
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <span>
#include <string_view>
#include <vector>

namespace skiff {

class Tokenizer;

namespace json_constraint_detail {
struct Schema;  // the compiled schema: a graph of nodes (json_constraint.cpp)
// One level of the automaton's stack: which node, where in it, and a few counters.
struct Frame {
  uint16_t node;
  uint8_t mode;
  uint8_t aux;
  uint32_t a, b, c;
};
}  // namespace json_constraint_detail

// A byte-level pushdown automaton accepting exactly the JSON texts described above.
// Cheap to copy (one shared_ptr and the active stack).
class JsonConstraint {
 public:
  static constexpr int kMaxSchemaDepth = 32;  // nested schema objects, deeper -> Error
  static constexpr int kMaxFrames = 48;       // automaton stack (document nesting)

  // Any JSON object (response_format json_object).
  static JsonConstraint any_object();
  // A schema in the supported subset (keys of "properties" in the object's order):
  //   type (a name or a list of names): object, array, string, number, integer, boolean, null;
  //   properties, required, additionalProperties (bool or schema); items (a schema), minItems,
  //   maxItems; enum, const; anyOf (alternatives must start with different bytes, e.g.
  //   string vs null; number absorbs integer); true / {} mean any value.
  //   description, title, $schema, $comment, default, examples are ignored.
  // Throws Error for anything else (pattern, format, $ref, minLength, oneOf, allOf, ...), naming
  // the keyword and the schema's JSON pointer, e.g. `unsupported keyword "pattern" at
  // #/properties/name`; also for unsatisfiable schemas (empty enum, minItems > maxItems),
  // nesting deeper than kMaxSchemaDepth and schemas too large (4096 nodes, 1 MiB of literals).
  static JsonConstraint from_schema(const nlohmann::ordered_json& schema);
  // The same; nlohmann::json keeps object keys sorted, so properties come alphabetically.
  static JsonConstraint from_schema(const nlohmann::json& schema);

  // Would appending these bytes keep the text a prefix of some accepted document?
  bool can_accept(std::string_view bytes) const;
  // Appends bytes; throws Error (state unchanged) when !can_accept(bytes).
  void accept(std::string_view bytes);
  // The text so far is a whole accepted document (a top-level number may still grow).
  bool complete() const;
  // Back to the empty text.
  void reset();

 private:
  friend class JsonTokenMask;
  struct State {
    int depth = 0;
    json_constraint_detail::Frame frames[kMaxFrames];
    void copy_from(const State& other);  // copies the active frames only
  };

  explicit JsonConstraint(std::shared_ptr<const json_constraint_detail::Schema> schema);
  // One byte; false (and `state` garbage) when it cannot continue the text.
  bool step(State& state, uint8_t byte) const;

  std::shared_ptr<const json_constraint_detail::Schema> schema_;
  State state_;
};

// Masks logits to the tokens that keep the text a prefix of an accepted document:
// - a token is allowed when its whole byte string can be accepted (tested on a trie of the
//   vocabulary's token bytes, pruned at the first failing byte);
// - end-of-generation tokens (Tokenizer::is_eog) are allowed exactly when complete(); once
//   nothing can follow (e.g. after the closing '}') only they remain;
// - other tokens with empty bytes (control, unknown, unused) are never allowed.
// Holds no per-call state: one mask can serve several generations at once.
class JsonTokenMask {
 public:
  explicit JsonTokenMask(const Tokenizer& tokenizer);
  // Sets logits[id] = -inf for every token not allowed; entries past the vocabulary too.
  // Throws Error when logits is smaller than the vocabulary.
  void apply(const JsonConstraint& constraint, std::span<float> logits) const;

 private:
  // Trie nodes in preorder: node i's subtree is [i, end[i]); its tokens (those whose bytes
  // start with the node's path) are sorted_ids[token_begin[i], token_end[i]).
  struct TrieNode {
    uint32_t end;
    uint32_t token_begin;
    uint32_t token_end;
    uint16_t depth;  // length of the node's path (>= 1)
    uint8_t byte;
  };
  std::vector<TrieNode> trie_;
  std::vector<int32_t> sorted_ids_;  // non-empty tokens that are not end-of-generation
  std::vector<int32_t> eog_ids_;
  std::vector<int32_t> never_ids_;  // empty bytes, not end-of-generation
  int32_t vocab_size_ = 0;
  int max_depth_ = 0;
};

}  // namespace skiff

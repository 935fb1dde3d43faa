// JSON-constrained decoding: byte strings accepted / rejected at the right byte for many
// schemas, unsupported keywords named with their path, and random generation under the token
// mask with the Llama 3 and LLaMA 2 vocabularies, checked by nlohmann::json and a validator
// written here independently of the constraint code. Also apply()'s time on 128k tokens.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "base/error.h"
#include "io/gguf.h"
#include "sample/json_constraint.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"

namespace skiff {
namespace {

using ojson = nlohmann::ordered_json;

JsonConstraint schema(const std::string& text) {
  return JsonConstraint::from_schema(ojson::parse(text));
}

// Index of the first byte of `text` the constraint refuses, or -1 when all are taken.
long rejected_at(JsonConstraint c, std::string_view text) {
  for (size_t i = 0; i < text.size(); ++i) {
    if (!c.can_accept(text.substr(i, 1))) return static_cast<long>(i);
    c.accept(text.substr(i, 1));
  }
  return -1;
}

// Accepted byte by byte, and as a whole, and a complete document at the end.
void expect_document(const JsonConstraint& c, std::string_view text) {
  EXPECT_EQ(rejected_at(c, text), -1) << text;
  JsonConstraint whole = c;
  ASSERT_TRUE(whole.can_accept(text)) << text;
  whole.accept(text);
  EXPECT_TRUE(whole.complete()) << text;
  nlohmann::json parsed;
  EXPECT_NO_THROW(parsed = nlohmann::json::parse(text)) << text;
}

void expect_rejected(const JsonConstraint& c, std::string_view text, long at) {
  EXPECT_EQ(rejected_at(c, text), at) << text;
}

// A prefix that is accepted but not a whole document.
void expect_incomplete(const JsonConstraint& c, std::string_view text) {
  JsonConstraint copy = c;
  ASSERT_TRUE(copy.can_accept(text)) << text;
  copy.accept(text);
  EXPECT_FALSE(copy.complete()) << text;
}

TEST(JsonConstraint, AnyObjectAcceptsCompactJson) {
  JsonConstraint c = JsonConstraint::any_object();
  EXPECT_FALSE(c.complete());
  expect_document(c, "{}");
  expect_document(c, R"({"a":1})");
  expect_document(c, R"({"a": 1, "b": [true, false, null, "x", -0.5e+10, {}], "c": {"d": []}})");
  expect_document(c, R"({"":"","\"\\\/\b\f\n\r\t":"\u00e9\uD83D\uDE00"})");
  expect_document(c, "{\"k\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"}");
  expect_document(c, R"({"n":[0,-0,12,1.25,1E5,1e-7,-3.0E+2]})");
  expect_incomplete(c, R"({"a":1)");
  expect_incomplete(c, R"({"a":"x)");
}

TEST(JsonConstraint, AnyObjectRejectsAtTheRightByte) {
  JsonConstraint c = JsonConstraint::any_object();
  expect_rejected(c, " {}", 0);           // no leading whitespace
  expect_rejected(c, "[1]", 0);           // an object, not an array
  expect_rejected(c, "{}x", 2);           // nothing after the document
  expect_rejected(c, "{} ", 2);           // not even whitespace
  expect_rejected(c, R"({"a" :1})", 4);   // no space before ':'
  expect_rejected(c, R"({"a":  1})", 6);  // one space at most
  expect_rejected(c, "{\"a\":\n1}", 5);   // no newlines
  expect_rejected(c, R"({"a":1 })", 6);
  expect_rejected(c, R"({"a":1,})", 7);
  expect_rejected(c, R"({"a":01})", 6);
  expect_rejected(c, R"({"a":-})", 6);
  expect_rejected(c, R"({"a":1.})", 7);
  expect_rejected(c, R"({"a":1e})", 7);
  expect_rejected(c, R"({"a":.5})", 5);
  expect_rejected(c, R"({"a":+1})", 5);
  expect_rejected(c, R"({"a":tru})", 8);
  expect_rejected(c, R"({"a":nulll})", 9);
  expect_rejected(c, R"({a:1})", 1);
  expect_rejected(c, R"({"a":'x'})", 5);
  expect_rejected(c, R"({"a":[1,]})", 8);
  expect_rejected(c, R"({"a":[1 ]})", 7);
  expect_rejected(c, R"({"a":{}}})", 8);
}

TEST(JsonConstraint, NumbersAreBounded) {
  JsonConstraint c = schema(R"({"type":"number"})");
  expect_document(c, "1234567890123456");       // 16 integer digits
  expect_rejected(c, "12345678901234567", 16);  // not 17
  expect_document(c, "0.1234567890123456");     // 16 fraction digits
  expect_rejected(c, "0.12345678901234567", 18);
  expect_document(c, "-1.5e99");
  expect_rejected(c, "1e100", 4);  // 2 exponent digits at most
  // A top-level number is complete after each digit but may still grow.
  JsonConstraint n = c;
  n.accept("12");
  EXPECT_TRUE(n.complete());
  EXPECT_TRUE(n.can_accept("3"));
  JsonConstraint i = schema(R"({"type":"integer"})");
  expect_document(i, "-42");
  expect_rejected(i, "4.2", 1);
  expect_rejected(i, "4e2", 1);
  expect_rejected(i, "-", -1);
  expect_incomplete(i, "-");
}

TEST(JsonConstraint, StringsAreValidJsonAndUtf8) {
  JsonConstraint c = schema(R"({"type":"string"})");
  expect_document(c, R"("")");
  expect_document(c, R"("a\"b\\c\/\b\f\n\r\t")");
  expect_document(c, R"("\u0000\u00E9\uffff\ud800\udc00\uDBFF\uDFFF")");
  expect_document(c,
                  "\"\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xf0\x90\x80\x80\xf4"
                  "\x8f\xbf\xbf\"");
  expect_rejected(c, "\"a\nb\"", 2);  // raw control character
  expect_rejected(c, "\"\x01\"", 1);
  expect_rejected(c, R"("\x")", 2);  // unknown escape
  expect_rejected(c, R"("\u12g4")", 5);
  expect_rejected(c, R"("\ude00")", 4);  // lone low surrogate: refused at its 2nd digit
  expect_rejected(c, R"("\ud800")", 7);  // a high surrogate needs its low half
  expect_rejected(c, R"("\ud800\n")", 8);
  expect_rejected(c, R"("\ud800\u0041")", 9);
  expect_rejected(c, R"("\ud800\ud800")", 10);
  expect_rejected(c, "\"\xc0\xaf\"", 1);  // overlong
  expect_rejected(c, "\"\xc1\"", 1);
  expect_rejected(c, "\"\xe0\x80\x80\"", 2);      // overlong 3-byte
  expect_rejected(c, "\"\xed\xa0\x80\"", 2);      // UTF-16 surrogate in UTF-8
  expect_rejected(c, "\"\xf4\x90\x80\x80\"", 2);  // past U+10FFFF
  expect_rejected(c, "\"\xf5\"", 1);
  expect_rejected(c, "\"\xc3\"", 2);  // truncated sequence
  expect_rejected(c, "\"\x80\"", 1);  // stray continuation byte
  expect_rejected(c, R"("a"")", 3);
}

TEST(JsonConstraint, PropertiesInSchemaOrderRequiredAndOptional) {
  JsonConstraint c = schema(R"({
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                   "tags": {"type": "array", "items": {"type": "string"}}},
    "required": ["name", "age"],
    "additionalProperties": false})");
  expect_document(c, R"({"name":"Ann","age":31})");
  expect_document(c, R"({"name": "Ann", "age": 31, "tags": ["a", "b"]})");
  expect_rejected(c, R"({"age":31,"name":"Ann"})", 2);  // schema order
  expect_rejected(c, R"({"name":"Ann"})", 13);          // age is required
  expect_rejected(c, R"({"name":"Ann","age":"31"})", 20);
  expect_rejected(c, R"({"name":"Ann","age":31,"x":1})", 24);
  expect_rejected(c, R"({"name":"Ann","age":31,})", 23);
  expect_rejected(c, R"({"names":1})", 6);
  expect_rejected(c, "{}", 1);

  // Optional properties may be skipped, never reordered.
  JsonConstraint o = schema(R"({"properties": {"a": {}, "b": {}, "c": {}}, "required": ["b"]})");
  expect_document(o, R"({"b":1})");
  expect_document(o, R"({"a":1,"b":2})");
  expect_document(o, R"({"b":2,"c":3})");
  expect_document(o, R"({"a":1,"b":2,"c":3})");
  expect_rejected(o, R"({"a":1})", 6);
  expect_rejected(o, R"({"c":1})", 2);
  expect_rejected(o, R"({"b":1,"a":2})", 8);

  JsonConstraint all_optional = schema(R"({"properties": {"x": {"type": "null"}}})");
  expect_document(all_optional, "{}");
  expect_document(all_optional, R"({"x":null})");
}

TEST(JsonConstraint, KeysNeedingEscapesAndSharedPrefixes) {
  JsonConstraint c = schema(R"({"properties": {"a": {}, "ab": {}, "a\"b": {}, "é": {}},
                                "required": ["é"]})");
  expect_document(c, R"({"a":1,"ab":2,"a\"b":3,"é":4})");
  expect_document(c, R"({"ab":2,"é":4})");
  expect_document(c, R"({"a\"b":3,"é":4})");
  expect_rejected(c, R"({"ab":2,"a":1,"é":4})", 10);
}

TEST(JsonConstraint, OrderedJsonKeepsOrderPlainJsonSortsKeys) {
  const std::string text = R"({"properties": {"z": {}, "a": {}}, "required": ["z", "a"]})";
  JsonConstraint ordered = JsonConstraint::from_schema(ojson::parse(text));
  JsonConstraint sorted = JsonConstraint::from_schema(nlohmann::json::parse(text));
  expect_document(ordered, R"({"z":1,"a":2})");
  expect_rejected(ordered, R"({"a":2,"z":1})", 2);
  expect_document(sorted, R"({"a":2,"z":1})");
}

TEST(JsonConstraint, Arrays) {
  JsonConstraint c =
      schema(R"({"type":"array","items":{"type":"integer"},"minItems":1,"maxItems":3})");
  expect_rejected(c, "[]", 1);
  expect_document(c, "[1]");
  expect_document(c, "[1, 2,3]");
  expect_rejected(c, "[1,2,3,", 6);
  expect_rejected(c, "[1.5]", 2);
  expect_rejected(c, "[\"1\"]", 1);
  JsonConstraint empty = schema(R"({"type":"array","maxItems":0})");
  expect_document(empty, "[]");
  expect_rejected(empty, "[1]", 1);
  JsonConstraint nested = schema(R"({"items":{"items":{"type":"boolean"}}})");
  expect_document(nested, "[[true], [], [false, true]]");
  expect_rejected(nested, "[[1]]", 2);
}

TEST(JsonConstraint, EnumConstAndLiterals) {
  JsonConstraint c = schema(R"({"enum": ["red", "green", 1, 12, null, {"a": [1]}, true]})");
  expect_document(c, R"("red")");
  expect_document(c, R"("green")");
  expect_document(c, "null");
  expect_document(c, "true");
  expect_document(c, R"({"a":[1]})");
  expect_document(c, "1");
  expect_document(c, "12");
  expect_rejected(c, "13", 1);
  expect_rejected(c, R"("blue")", 1);
  expect_rejected(c, R"("red" )", 5);
  expect_incomplete(c, R"("gr)");
  expect_rejected(c, "false", 0);

  JsonConstraint typed = schema(R"({"type": "string", "enum": ["a", 1, "b"]})");
  expect_document(typed, R"("a")");
  expect_rejected(typed, "1", 0);

  JsonConstraint k = schema(R"({"const": "x\ny"})");
  expect_document(k, R"("x\ny")");
  expect_rejected(k, "\"x\ny\"", 2);  // exactly nlohmann's spelling

  JsonConstraint in_object =
      schema(R"({"properties": {"unit": {"enum": ["C", "F"]}, "v": {"type": "number"}},
                                        "required": ["unit", "v"]})");
  expect_document(in_object, R"({"unit":"F","v":-3.5})");
  expect_rejected(in_object, R"({"unit":"K")", 9);
}

TEST(JsonConstraint, AnyOfAndTypeLists) {
  JsonConstraint c = schema(R"({"anyOf": [{"type": "string"}, {"type": "null"}]})");
  expect_document(c, R"("x")");
  expect_document(c, "null");
  expect_rejected(c, "1", 0);
  JsonConstraint t = schema(R"({"type": ["integer", "boolean", "null"]})");
  expect_document(t, "-7");
  expect_document(t, "false");
  expect_document(t, "null");
  expect_rejected(t, "1.5", 1);
  expect_rejected(t, R"("")", 0);
  JsonConstraint merged = schema(R"({"anyOf": [{"type": "integer"}, {"type": "number"},
                                               {"enum": ["x", 3]}, {"type": "object"}]})");
  expect_document(merged, "2.5");
  expect_document(merged, R"("x")");
  expect_document(merged, R"({"q":[]})");
  expect_rejected(merged, R"("y")", 1);
  JsonConstraint mixed = schema(R"({"anyOf": [{"type": "array", "items": {"type": "string"}},
                                              {"properties": {"a": {"type": "integer"}}, "required": ["a"]}]})");
  expect_document(mixed, R"(["a"])");
  expect_document(mixed, R"({"a":1})");
  expect_rejected(mixed, "[1]", 1);
}

TEST(JsonConstraint, MapsAndAnyValues) {
  JsonConstraint none = schema(R"({"type": "object", "additionalProperties": false})");
  expect_document(none, "{}");
  expect_rejected(none, R"({"a":1})", 1);
  JsonConstraint ints =
      schema(R"({"type": "object", "additionalProperties": {"type": "integer"}})");
  expect_document(ints, R"({"a":1, "b":2})");
  expect_rejected(ints, R"({"a":"1"})", 5);
  JsonConstraint any = schema("{}");
  expect_document(any, "[1]");
  expect_document(any, "\"s\"");
  expect_document(any, "null");
  JsonConstraint any_true = JsonConstraint::from_schema(ojson(true));
  expect_document(any_true, R"({"a":[{}]})");
  JsonConstraint ignored = schema(R"({"$schema": "x", "title": "t", "description": "d",
                                      "default": 1, "examples": [1], "$comment": "c", "type": "integer"})");
  expect_document(ignored, "5");
}

TEST(JsonConstraint, NestingIsBounded) {
  JsonConstraint c = JsonConstraint::any_object();
  std::string deep;
  long refused = -1;
  for (int i = 0; i < 100 && refused < 0; ++i) {
    std::string next = deep + (i == 0 ? "{" : "\"k\":{");
    if (!c.can_accept(next))
      refused = static_cast<long>(i);
    else
      deep = next;
  }
  EXPECT_GT(refused, 20);
  // The deepest object can still be closed.
  JsonConstraint d = c;
  d.accept(deep);
  std::string close(static_cast<size_t>(refused), '}');
  ASSERT_TRUE(d.can_accept(close));
  d.accept(close);
  EXPECT_TRUE(d.complete());
}

TEST(JsonConstraint, AcceptThrowsAndKeepsState) {
  JsonConstraint c = JsonConstraint::any_object();
  c.accept("{\"a\":");
  EXPECT_THROW(c.accept("1x"), Error);
  c.accept("1}");
  EXPECT_TRUE(c.complete());
  c.reset();
  EXPECT_FALSE(c.complete());
  EXPECT_TRUE(c.can_accept("{"));
}

void expect_schema_error(const std::string& text, const std::vector<std::string>& parts) {
  try {
    (void)schema(text);
    ADD_FAILURE() << "accepted: " << text;
  } catch (const Error& e) {
    for (const std::string& part : parts) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos)
          << "message \"" << e.what() << "\" lacks \"" << part << "\"";
    }
  }
}

TEST(JsonConstraint, UnsupportedKeywordsNameKeywordAndPath) {
  expect_schema_error(R"({"type":"string","pattern":"^a"})", {"\"pattern\"", "at #"});
  expect_schema_error(R"({"properties":{"name":{"type":"string","format":"email"}}})",
                      {"\"format\"", "#/properties/name"});
  expect_schema_error(R"({"properties":{"a/b":{"minLength":1}}})",
                      {"\"minLength\"", "#/properties/a~1b"});
  expect_schema_error(R"({"items":{"$ref":"#/$defs/x"}})", {"\"$ref\"", "#/items"});
  expect_schema_error(R"({"anyOf":[{"type":"string"},{"oneOf":[]}]})", {"\"oneOf\"", "#/anyOf/1"});
  expect_schema_error(R"({"allOf":[]})", {"\"allOf\""});
  expect_schema_error(R"({"if":{},"then":{}})", {"\"if\""});
  expect_schema_error(R"({"type":"integer","minimum":0})", {"\"minimum\""});
  expect_schema_error(R"({"$defs":{}})", {"\"$defs\""});
  expect_schema_error(R"({"type":"object","patternProperties":{}})", {"\"patternProperties\""});
  expect_schema_error(R"({"prefixItems":[]})", {"\"prefixItems\""});
}

TEST(JsonConstraint, InvalidOrUnsatisfiableSchemas) {
  expect_schema_error(R"({"type":"date"})", {"unknown type \"date\""});
  expect_schema_error(R"({"type":[]})", {"\"type\""});
  expect_schema_error(R"({"enum":[]})", {"allows no value"});
  expect_schema_error(R"({"type":"string","enum":[1,2]})", {"allows no value"});
  expect_schema_error(R"({"items":false})", {"#/items", "accepts nothing"});
  expect_schema_error(R"({"minItems":3,"maxItems":2})", {"minItems"});
  expect_schema_error(R"({"minItems":-1})", {"minItems"});
  expect_schema_error(R"({"items":[{}]})", {"tuple"});
  expect_schema_error(R"({"required":["a"],"properties":{"b":{}}})", {"\"a\"", "not in"});
  expect_schema_error(R"({"anyOf":[{"type":"object"},{"properties":{"a":{}}}]})",
                      {"#/anyOf", "'{'"});
  expect_schema_error(R"({"anyOf":[]})", {"anyOf"});
  expect_schema_error(R"({"anyOf":[{}],"type":"string"})", {"anyOf", "type"});
  expect_schema_error("[1]", {"expected a schema object"});
  // Nesting deeper than kMaxSchemaDepth.
  std::string deep = R"({"type":"string"})";
  for (int i = 0; i < 40; ++i) deep = R"({"items":)" + deep + "}";
  expect_schema_error(deep, {"nested deeper than 32"});
  std::string ok = R"({"type":"string"})";
  for (int i = 0; i < 31; ++i) ok = R"({"items":)" + ok + "}";
  EXPECT_NO_THROW((void)schema(ok));
  // Too large.
  ojson huge;
  huge["enum"] = ojson::array();
  for (int i = 0; i < 3000; ++i) huge["enum"].push_back(std::string(500, 'x') + std::to_string(i));
  EXPECT_THROW((void)JsonConstraint::from_schema(huge), Error);
}

// ------------------------------------------------------------------------------------------
// Random generation under the token mask.

// The subset's meaning, written from the JSON Schema spec and not from the constraint code.
bool valid(const nlohmann::json& v, const ojson& s) {
  if (s.is_boolean()) return s.get<bool>();
  if (s.contains("anyOf")) {
    for (const ojson& alt : s["anyOf"]) {
      if (valid(v, alt)) return true;
    }
    return false;
  }
  if (s.contains("enum")) {
    bool found = false;
    for (const ojson& e : s["enum"]) found = found || nlohmann::json(e) == v;
    if (!found) return false;
  }
  if (s.contains("const") && nlohmann::json(s["const"]) != v) return false;
  if (s.contains("type")) {
    std::vector<std::string> types;
    if (s["type"].is_string())
      types.push_back(s["type"]);
    else
      for (const ojson& t : s["type"]) types.push_back(t);
    bool any = false;
    for (const std::string& t : types) {
      any = any || (t == "object" && v.is_object()) || (t == "array" && v.is_array()) ||
            (t == "string" && v.is_string()) || (t == "number" && v.is_number()) ||
            (t == "integer" &&
             (v.is_number_integer() ||
              (v.is_number_float() && std::trunc(v.get<double>()) == v.get<double>()))) ||
            (t == "boolean" && v.is_boolean()) || (t == "null" && v.is_null());
    }
    if (!any) return false;
  }
  if (v.is_object()) {
    if (s.contains("required")) {
      for (const ojson& name : s["required"]) {
        if (!v.contains(name.get<std::string>())) return false;
      }
    }
    for (auto it = v.begin(); it != v.end(); ++it) {
      if (s.contains("properties") && s["properties"].contains(it.key())) {
        if (!valid(it.value(), s["properties"][it.key()])) return false;
      } else if (s.contains("additionalProperties") &&
                 !valid(it.value(), s["additionalProperties"])) {
        return false;
      }
    }
  }
  if (v.is_array()) {
    if (s.contains("minItems") && v.size() < s["minItems"].get<size_t>()) return false;
    if (s.contains("maxItems") && v.size() > s["maxItems"].get<size_t>()) return false;
    if (s.contains("items")) {
      for (const auto& item : v) {
        if (!valid(item, s["items"])) return false;
      }
    }
  }
  return true;
}

const Tokenizer& load_tokenizer(const std::string& relative) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto& slot = cache[relative];
  if (!slot) {
    slot = std::make_unique<Tokenizer>(
        vocab_from_gguf(GgufFile::open(std::string(SKIFF_SHARED_DIR) + "/" + relative)));
  }
  return *slot;
}

const char* kLlama3 = "models/vocab/ggml-vocab-llama-bpe.gguf";
const char* kLlama2 = "models/ggml-vocab-llama-spm.gguf";

const std::vector<std::string>& property_schemas() {
  static const std::vector<std::string> schemas = {
      "",  // any_object
      R"({"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"},
          "email":{"type":"string"},"admin":{"type":"boolean"}},"required":["name","age"],
          "additionalProperties":false})",
      R"({"type":"object","properties":{"items":{"type":"array","items":{"type":"object",
          "properties":{"id":{"type":"integer"},"price":{"type":"number"},
          "tags":{"type":"array","items":{"enum":["new","sale","old"]},"maxItems":3}},
          "required":["id","price"]},"minItems":1,"maxItems":3},
          "note":{"anyOf":[{"type":"string"},{"type":"null"}]}},"required":["items","note"]})",
      R"({"type":"object","properties":{"kind":{"const":"point"},"xy":{"type":"array",
          "items":{"type":"number"},"minItems":2,"maxItems":2},
          "meta":{"type":"object","additionalProperties":{"type":["integer","null"]}}},
          "required":["kind","xy","meta"]})",
      R"({"type":"array","items":{"type":["string","boolean"]},"minItems":1,"maxItems":4})",
      R"({"enum":["alpha","beta",3,null,{"x":[1,2]}]})",
  };
  return schemas;
}

// Generates one document by drawing allowed tokens; returns the text and whether it ended.
struct Generated {
  std::string text;
  bool finished = false;
};

Generated generate(const Tokenizer& tok, const JsonTokenMask& mask, JsonConstraint c,
                   std::mt19937& rng, const std::vector<float>& bias, int max_tokens) {
  const size_t n = static_cast<size_t>(tok.vocab().size());
  std::vector<float> logits(n);
  std::normal_distribution<float> noise(0.0f, 1.0f);
  std::uniform_int_distribution<int32_t> any_id(0, static_cast<int32_t>(n) - 1);
  Generated out;
  for (int step = 0; step < max_tokens; ++step) {
    for (size_t i = 0; i < n; ++i) logits[i] = noise(rng) * 3.0f + bias[i];
    mask.apply(c, logits);
    // The mask agrees with can_accept / complete on a sample of tokens.
    for (int k = 0; k < 64; ++k) {
      int32_t id = any_id(rng);
      std::string bytes = tok.token_bytes(id);
      bool allowed = logits[static_cast<size_t>(id)] != -std::numeric_limits<float>::infinity();
      bool expected = tok.is_eog(id) ? c.complete() : !bytes.empty() && c.can_accept(bytes);
      EXPECT_EQ(allowed, expected) << "token " << id << " after " << out.text;
      if (allowed != expected) return out;
    }
    size_t best = 0;
    for (size_t i = 1; i < n; ++i) {
      if (logits[i] > logits[best]) best = i;
    }
    if (logits[best] == -std::numeric_limits<float>::infinity()) {
      ADD_FAILURE() << "no token allowed after " << out.text;  // a dead end
      return out;
    }
    const int32_t id = static_cast<int32_t>(best);
    if (tok.is_eog(id)) {
      EXPECT_TRUE(c.complete());
      out.finished = true;
      return out;
    }
    std::string bytes = tok.token_bytes(id);
    c.accept(bytes);
    out.text += bytes;
  }
  return out;
}

void run_property_test(const char* vocab_file, int runs_per_schema) {
  const Tokenizer& tok = load_tokenizer(vocab_file);
  const JsonTokenMask mask(tok);
  std::mt19937 rng(1234);
  // Tokens that close something get a push, or random documents would rarely end.
  std::vector<float> closing(static_cast<size_t>(tok.vocab().size()), 0.0f);
  for (int32_t id = 0; id < tok.vocab().size(); ++id) {
    if (tok.is_eog(id)) closing[static_cast<size_t>(id)] = 8.0f;
    const std::string bytes = tok.token_bytes(id);
    if (bytes.find_first_of("\"]}") != std::string::npos) closing[static_cast<size_t>(id)] = 6.0f;
  }
  int finished = 0, total = 0;
  for (const std::string& text : property_schemas()) {
    const ojson s = text.empty() ? ojson::parse(R"({"type":"object"})") : ojson::parse(text);
    const JsonConstraint c =
        text.empty() ? JsonConstraint::any_object() : JsonConstraint::from_schema(s);
    for (int run = 0; run < runs_per_schema; ++run) {
      Generated g = generate(tok, mask, c, rng, closing, 400);
      ++total;
      if (::testing::Test::HasFailure()) return;
      if (!g.finished) continue;
      ++finished;
      nlohmann::json doc;
      ASSERT_NO_THROW(doc = nlohmann::json::parse(g.text)) << g.text;
      EXPECT_TRUE(valid(doc, s)) << "schema " << text << "\ndocument " << g.text;
      if (run == 0) std::cout << "  [" << vocab_file << "] " << g.text.substr(0, 160) << "\n";
    }
  }
  std::cout << "  finished " << finished << " of " << total << " documents\n";
  EXPECT_GE(finished, total * 3 / 4);
}

TEST(JsonConstraint, RandomGenerationLlama3IsValid) { run_property_test(kLlama3, 4); }

TEST(JsonConstraint, RandomGenerationLlama2IsValid) { run_property_test(kLlama2, 4); }

TEST(JsonConstraint, MaskAtStartAndEnd) {
  const Tokenizer& tok = load_tokenizer(kLlama3);
  const JsonTokenMask mask(tok);
  JsonConstraint c = JsonConstraint::any_object();
  const size_t n = static_cast<size_t>(tok.vocab().size());
  std::vector<float> logits(n + 5, 0.0f);  // padded like some models' output rows
  mask.apply(c, logits);
  size_t allowed = 0;
  for (size_t i = 0; i < n + 5; ++i) {
    if (std::isinf(logits[i])) continue;
    ++allowed;
    ASSERT_LT(i, n);
    const std::string bytes = tok.token_bytes(static_cast<int32_t>(i));
    EXPECT_EQ(bytes[0], '{') << i;
    EXPECT_FALSE(tok.is_eog(static_cast<int32_t>(i)));
  }
  EXPECT_GE(allowed, 2u);  // "{", "{\"" and the like; "{\n" is refused
  c.accept("{\"a\":[1]}");
  std::fill(logits.begin(), logits.end(), 0.0f);
  mask.apply(c, logits);
  for (size_t i = 0; i < n; ++i) {
    EXPECT_EQ(std::isinf(logits[i]), !tok.is_eog(static_cast<int32_t>(i))) << i;
  }
  std::vector<float> short_logits(n - 1);
  EXPECT_THROW(mask.apply(c, short_logits), Error);
}

TEST(JsonConstraint, MaskTimeLlama3) {
  const Tokenizer& tok = load_tokenizer(kLlama3);
  auto t0 = std::chrono::steady_clock::now();
  const JsonTokenMask mask(tok);
  auto t1 = std::chrono::steady_clock::now();
  std::cout << "  JsonTokenMask build: "
            << std::chrono::duration<double, std::milli>(t1 - t0).count() << " ms\n";
  const JsonConstraint base = schema(R"({"type":"object","properties":{"name":{"type":"string"},
      "n":{"type":"number"},"e":{"enum":["a","b"]}},"required":["name","n","e"]})");
  std::vector<float> logits(static_cast<size_t>(tok.vocab().size()));
  double worst = 0;
  for (const char* prefix : {"", "{", R"({"name":)", R"({"name":"abc)", R"({"name":"abc","n":)",
                             R"({"name":"abc","n":12)", R"({"name":"abc","n":12,"e":)"}) {
    JsonConstraint c = base;
    c.accept(prefix);
    constexpr int kRepeats = 20;
    auto start = std::chrono::steady_clock::now();
    for (int r = 0; r < kRepeats; ++r) mask.apply(c, logits);
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                    .count() /
                kRepeats;
    worst = std::max(worst, ms);
    std::cout << "  apply() after '" << prefix << "': " << ms << " ms\n";
  }
  EXPECT_LT(worst, 100.0);  // generous: shared CI machines; typical numbers are printed above
}

}  // namespace
}  // namespace skiff

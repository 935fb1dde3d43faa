// Compiling a JSON schema (the subset in json_constraint.h) into the node graph; every
// refusal names the keyword and the schema's JSON pointer.
#include "sample/json_schema.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <string_view>

#include "base/error.h"
#include "sample/json_constraint.h"

namespace skiff::json_constraint_detail {

bool narrow(const LiteralSet& set, uint32_t& lo, uint32_t& hi, uint32_t pos, uint8_t c) {
  auto byte_at = [&](uint32_t i) { return static_cast<uint8_t>(set[i][pos]); };
  uint32_t l = lo;
  if (set[l].size() == pos) ++l;
  uint32_t h = hi;
  // Binary search for the first with byte >= c, then the first with byte > c.
  uint32_t a = l, b = h;
  while (a < b) {
    uint32_t m = (a + b) / 2;
    if (byte_at(m) < c)
      a = m + 1;
    else
      b = m;
  }
  uint32_t first = a;
  b = h;
  while (a < b) {
    uint32_t m = (a + b) / 2;
    if (byte_at(m) <= c)
      a = m + 1;
    else
      b = m;
  }
  if (first == a) return false;
  lo = first;
  hi = a;
  return true;
}

namespace {

std::string escape_pointer(const std::string& key) {
  std::string out;
  for (char c : key) {
    if (c == '~')
      out += "~0";
    else if (c == '/')
      out += "~1";
    else
      out += c;
  }
  return out;
}

std::string display(const std::string& pointer) { return "#" + pointer; }

template <typename Json>
class Compiler {
 public:
  explicit Compiler(Schema& schema) : s_(schema) {}

  uint16_t compile(const Json& j, const std::string& path, int depth) {
    if (depth > JsonConstraint::kMaxSchemaDepth) {
      fail("json schema: nested deeper than {} levels at {}", JsonConstraint::kMaxSchemaDepth,
           display(path));
    }
    if (j.is_boolean()) {
      if (j.template get<bool>()) return Schema::kAny;
      fail("json schema: schema false at {} accepts nothing", display(path));
    }
    if (!j.is_object()) fail("json schema: expected a schema object at {}", display(path));
    for (auto it = j.begin(); it != j.end(); ++it) {
      const std::string& key = it.key();
      static constexpr std::string_view kKnown[] = {
          "type",    "properties", "required",    "additionalProperties",
          "items",   "minItems",   "maxItems",    "enum",
          "const",   "anyOf",      "description", "title",
          "$schema", "$comment",   "default",     "examples"};
      if (std::find(std::begin(kKnown), std::end(kKnown), key) == std::end(kKnown)) {
        fail("json schema: unsupported keyword \"{}\" at {}", key, display(path));
      }
    }
    if (j.contains("anyOf")) {
      for (const char* other : {"type", "enum", "const", "properties", "items"}) {
        if (j.contains(other)) {
          fail("json schema: \"anyOf\" together with \"{}\" at {} is not supported", other,
               display(path));
        }
      }
      const Json& alternatives = j["anyOf"];
      if (!alternatives.is_array() || alternatives.empty()) {
        fail("json schema: \"anyOf\" at {} must be a non-empty array", display(path));
      }
      std::vector<uint16_t> nodes;
      for (size_t i = 0; i < alternatives.size(); ++i) {
        nodes.push_back(compile(alternatives[i], fmt::format("{}/anyOf/{}", path, i), depth + 1));
      }
      return make_union(nodes, path + "/anyOf");
    }

    std::vector<std::string> types;
    if (j.contains("type")) {
      const Json& t = j["type"];
      if (t.is_string()) {
        types.push_back(t.template get<std::string>());
      } else if (t.is_array() && !t.empty()) {
        for (const Json& name : t) {
          if (!name.is_string()) fail("json schema: \"type\" at {} must hold names", display(path));
          types.push_back(name.template get<std::string>());
        }
      } else {
        fail("json schema: \"type\" at {} must be a name or a non-empty list", display(path));
      }
      for (const std::string& type : types) {
        static constexpr std::string_view kTypes[] = {"object",  "array",   "string", "number",
                                                      "integer", "boolean", "null"};
        if (std::find(std::begin(kTypes), std::end(kTypes), type) == std::end(kTypes)) {
          fail("json schema: unknown type \"{}\" at {}", type, display(path));
        }
      }
    }

    if (j.contains("enum") || j.contains("const")) return compile_values(j, types, path);

    if (types.empty()) {
      if (j.contains("properties") || j.contains("required") ||
          j.contains("additionalProperties")) {
        types.push_back("object");
      } else if (j.contains("items") || j.contains("minItems") || j.contains("maxItems")) {
        types.push_back("array");
      } else {
        return Schema::kAny;
      }
    }
    std::vector<uint16_t> nodes;
    for (const std::string& type : types) {
      if (type == "object")
        nodes.push_back(compile_object(j, path, depth));
      else if (type == "array")
        nodes.push_back(compile_array(j, path, depth));
      else if (type == "string")
        nodes.push_back(Schema::kString);
      else if (type == "number")
        nodes.push_back(Schema::kNumber);
      else if (type == "integer")
        nodes.push_back(Schema::kInteger);
      else if (type == "boolean")
        nodes.push_back(Schema::kBoolean);
      else
        nodes.push_back(Schema::kNull);
    }
    return make_union(nodes, path + "/type");
  }

 private:
  static bool has_type(const Json& v, const std::string& type) {
    if (type == "object") return v.is_object();
    if (type == "array") return v.is_array();
    if (type == "string") return v.is_string();
    if (type == "number") return v.is_number();
    if (type == "boolean") return v.is_boolean();
    if (type == "null") return v.is_null();
    if (v.is_number_integer()) return true;  // integer
    if (!v.is_number_float()) return false;
    double d = v.template get<double>();
    return std::isfinite(d) && d == std::trunc(d);
  }

  uint16_t compile_values(const Json& j, const std::vector<std::string>& types,
                          const std::string& path) {
    std::vector<const Json*> values;
    if (j.contains("enum")) {
      const Json& e = j["enum"];
      if (!e.is_array()) fail("json schema: \"enum\" at {} must be an array", display(path));
      for (const Json& v : e) {
        if (!j.contains("const") || v == j["const"]) values.push_back(&v);
      }
    } else {
      values.push_back(&j["const"]);
    }
    LiteralSet literals;
    for (const Json* v : values) {
      bool typed = types.empty();
      for (const std::string& type : types) typed = typed || has_type(*v, type);
      if (typed) literals.push_back(v->dump());
    }
    if (literals.empty())
      fail("json schema: \"enum\"/\"const\" at {} allows no value", display(path));
    return s_.add_literals(std::move(literals));
  }

  uint32_t count(const Json& j, const char* key, const std::string& path, uint32_t fallback) {
    if (!j.contains(key)) return fallback;
    const Json& v = j[key];
    if (!v.is_number_integer() || v.template get<int64_t>() < 0 ||
        v.template get<int64_t>() > 0xfffffffe) {
      fail("json schema: \"{}\" at {} must be a non-negative integer", key, display(path));
    }
    return static_cast<uint32_t>(v.template get<int64_t>());
  }

  uint16_t compile_array(const Json& j, const std::string& path, int depth) {
    uint16_t items = Schema::kAny;
    if (j.contains("items")) {
      if (j["items"].is_array()) {
        fail("json schema: \"items\" as a list (tuple) at {} is not supported", display(path));
      }
      items = compile(j["items"], path + "/items", depth + 1);
    }
    uint32_t min_items = count(j, "minItems", path, 0);
    uint32_t max_items = count(j, "maxItems", path, std::numeric_limits<uint32_t>::max());
    if (min_items > max_items) {
      fail("json schema: \"minItems\" > \"maxItems\" at {}", display(path));
    }
    uint16_t id = s_.add(Kind::kArray);
    Node& n = s_.nodes[id];
    n.items = items;
    n.min_items = min_items;
    n.max_items = max_items;
    return id;
  }

  uint16_t compile_object(const Json& j, const std::string& path, int depth) {
    std::vector<std::string> names;
    std::vector<uint16_t> prop_nodes;
    if (j.contains("properties")) {
      const Json& props = j["properties"];
      if (!props.is_object())
        fail("json schema: \"properties\" at {} must be an object", display(path));
      if (props.size() > kMaxProperties) {
        fail("json schema: more than {} properties at {}", kMaxProperties, display(path));
      }
      for (auto it = props.begin(); it != props.end(); ++it) {
        names.push_back(it.key());
        prop_nodes.push_back(
            compile(it.value(), path + "/properties/" + escape_pointer(it.key()), depth + 1));
      }
    }
    std::vector<bool> required(names.size(), false);
    if (j.contains("required")) {
      const Json& r = j["required"];
      if (!r.is_array()) fail("json schema: \"required\" at {} must be an array", display(path));
      for (const Json& name : r) {
        if (!name.is_string())
          fail("json schema: \"required\" at {} must hold names", display(path));
        auto it = std::find(names.begin(), names.end(), name.template get<std::string>());
        if (it == names.end()) {
          fail("json schema: required property \"{}\" at {} is not in \"properties\"",
               name.template get<std::string>(), display(path));
        }
        required[static_cast<size_t>(it - names.begin())] = true;
      }
    }
    uint16_t values = Schema::kAny;
    if (j.contains("additionalProperties")) {
      const Json& extra = j["additionalProperties"];
      if (extra.is_boolean()) {
        values = extra.template get<bool>() ? Schema::kAny : kNone;
      } else {
        values = compile(extra, path + "/additionalProperties", depth + 1);
      }
    }
    if (names.empty()) {
      if (values == Schema::kAny) return Schema::kAnyObject;
      uint16_t id = s_.add(Kind::kMap);
      s_.nodes[id].values = values;
      return id;
    }

    const size_t n = names.size();
    uint16_t id = s_.add(Kind::kObject);
    std::vector<LiteralSet> key_sets(n);
    std::vector<std::vector<uint16_t>> key_props(n);
    for (size_t p = 0; p < n; ++p) {
      std::vector<std::pair<std::string, uint16_t>> keys;
      for (size_t q = p; q < n; ++q) {
        keys.emplace_back(Json(names[q]).dump(), static_cast<uint16_t>(q));
        s_.count_bytes(keys.back().first.size());
        if (required[q]) break;
      }
      std::sort(keys.begin(), keys.end());
      for (auto& [text, prop] : keys) {
        key_sets[p].push_back(std::move(text));
        key_props[p].push_back(prop);
      }
    }
    Node& node = s_.nodes[id];
    node.prop_nodes = std::move(prop_nodes);
    node.key_sets = std::move(key_sets);
    node.key_props = std::move(key_props);
    node.optional_from.assign(n + 1, true);
    for (size_t p = n; p-- > 0;) node.optional_from[p] = node.optional_from[p + 1] && !required[p];
    return id;
  }

  // The first bytes a node's values can start with.
  std::array<bool, 256> first_bytes(uint16_t id) const {
    std::array<bool, 256> out{};
    const Node& n = s_.nodes[id];
    switch (n.kind) {
      case Kind::kString:
        out['"'] = true;
        break;
      case Kind::kNumber:
      case Kind::kInteger:
        out['-'] = true;
        for (int c = '0'; c <= '9'; ++c) out[c] = true;
        break;
      case Kind::kLiteral:
        for (const std::string& s : n.literals) out[static_cast<uint8_t>(s[0])] = true;
        break;
      case Kind::kArray:
        out['['] = true;
        break;
      case Kind::kObject:
      case Kind::kMap:
        out['{'] = true;
        break;
      case Kind::kUnion:
        for (int c = 0; c < 256; ++c) out[c] = n.dispatch[c] != kNone;
        break;
    }
    return out;
  }

  // One node for "any of these": literal sets merge, number absorbs integer, string and
  // number absorb the literals they cover; what is left must start with distinct bytes.
  uint16_t make_union(const std::vector<uint16_t>& nodes, const std::string& path) {
    std::vector<uint16_t> flat;
    for (uint16_t id : nodes) {
      if (id == Schema::kAny) return Schema::kAny;
      const Node& n = s_.nodes[id];
      if (n.kind == Kind::kUnion)
        flat.insert(flat.end(), n.alternatives.begin(), n.alternatives.end());
      else
        flat.push_back(id);
    }
    auto has = [&](uint16_t id) { return std::find(flat.begin(), flat.end(), id) != flat.end(); };
    const bool any_string = has(Schema::kString), any_number = has(Schema::kNumber);
    LiteralSet literals;
    std::vector<uint16_t> alternatives;
    for (uint16_t id : flat) {
      const Node& n = s_.nodes[id];
      if (n.kind == Kind::kLiteral) {
        for (const std::string& s : n.literals) {
          bool numeric = s[0] == '-' || (s[0] >= '0' && s[0] <= '9');
          if ((s[0] == '"' && any_string) || (numeric && any_number)) continue;
          literals.push_back(s);
        }
      } else if (!(id == Schema::kInteger && any_number) && !has_id(alternatives, id)) {
        alternatives.push_back(id);
      }
    }
    if (!literals.empty()) alternatives.push_back(s_.add_literals(std::move(literals)));
    if (alternatives.size() == 1) return alternatives[0];

    uint16_t id = s_.add(Kind::kUnion);
    std::array<uint16_t, 256> dispatch;
    dispatch.fill(kNone);
    for (size_t i = 0; i < alternatives.size(); ++i) {
      std::array<bool, 256> first = first_bytes(alternatives[i]);
      for (int c = 0; c < 256; ++c) {
        if (!first[c]) continue;
        if (dispatch[c] != kNone) {
          fail(
              "json schema: alternatives at {} can both start with '{}' (alternatives must "
              "differ in JSON type: object, array, string, number, true/false/null)",
              display(path), static_cast<char>(c));
        }
        dispatch[c] = alternatives[i];
      }
    }
    Node& n = s_.nodes[id];
    n.alternatives = std::move(alternatives);
    n.dispatch = dispatch;
    return id;
  }

  static bool has_id(const std::vector<uint16_t>& v, uint16_t id) {
    return std::find(v.begin(), v.end(), id) != v.end();
  }

  Schema& s_;
};

template <typename Json>
std::shared_ptr<const Schema> compile_any(const Json& j) {
  auto schema = std::make_shared<Schema>();
  Compiler<Json> compiler(*schema);
  schema->root = compiler.compile(j, "", 0);
  return schema;
}

}  // namespace

std::shared_ptr<const Schema> compile_schema(const nlohmann::ordered_json& schema) {
  return compile_any(schema);
}

std::shared_ptr<const Schema> compile_schema(const nlohmann::json& schema) {
  return compile_any(schema);
}

}  // namespace skiff::json_constraint_detail

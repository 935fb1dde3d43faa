#include "memory/knowledge_base.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <unordered_set>

#include "base/error.h"

namespace skiff::memory {

namespace {

using nlohmann::json;

// Calls fn(object, line_number) for every non-empty line of a JSON Lines file.
template <class Fn>
void for_each_line(const std::string& path, Fn&& fn) {
  std::ifstream in(path);
  if (!in) fail("{}: cannot open", path);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) fail("{}:{}: not valid JSON", path, n);
    if (!j.is_object()) fail("{}:{}: expected a JSON object", path, n);
    fn(j, n);
  }
}

std::string string_field(const json& j, const char* key, const std::string& path, int line) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) fail("{}:{}: field \"{}\" is missing or not a string", path, line, key);
  std::string s = it->get<std::string>();
  if (s.empty()) fail("{}:{}: field \"{}\" is empty", path, line, key);
  return s;
}

}  // namespace

std::vector<KbEntry> read_kb(const std::string& path) {
  std::vector<KbEntry> kb;
  std::unordered_set<std::string> ids;
  for_each_line(path, [&](const json& j, int line) {
    KbEntry e;
    e.id = string_field(j, "id", path, line);
    const std::string kind = string_field(j, "kind", path, line);
    if (kind == "passage") e.kind = EntryKind::kPassage;
    else if (kind == "qa") e.kind = EntryKind::kQa;
    else fail("{}:{}: kind \"{}\" is not \"passage\" or \"qa\"", path, line, kind);
    e.text = string_field(j, "text", path, line);
    if (!ids.insert(e.id).second) fail("{}:{}: duplicate id \"{}\"", path, line, e.id);
    kb.push_back(std::move(e));
  });
  if (kb.empty()) fail("{}: no entries", path);
  return kb;
}

std::vector<Question> read_questions(const std::string& path) {
  std::vector<Question> qs;
  for_each_line(path, [&](const json& j, int line) {
    Question q;
    q.question = string_field(j, "question", path, line);
    q.answer = string_field(j, "answer", path, line);
    auto string_list = [&](const json& list, const char* what) {
      if (!list.is_array() || list.empty()) fail("{}:{}: \"{}\" must be a non-empty array", path, line, what);
      std::vector<std::string> out;
      for (const json& id : list) {
        if (!id.is_string()) fail("{}:{}: \"{}\" must hold strings", path, line, what);
        out.push_back(id.get<std::string>());
      }
      return out;
    };
    if (auto hop_ids = j.find("hop_ids"); hop_ids != j.end()) {
      if (!hop_ids->is_array() || hop_ids->empty()) fail("{}:{}: \"hop_ids\" must be a non-empty array", path, line);
      for (const json& hop : *hop_ids) q.hop_ids.push_back(string_list(hop, "hop_ids"));
    } else if (auto ids = j.find("ids"); ids != j.end()) {
      for (std::string& id : string_list(*ids, "ids")) q.hop_ids.push_back({std::move(id)});
    } else {
      fail("{}:{}: neither \"hop_ids\" nor \"ids\" is given", path, line);
    }
    auto hops = j.find("hops");
    if (hops != j.end()) {
      if (!hops->is_number_integer() || hops->get<int>() < 1) fail("{}:{}: \"hops\" must be a positive integer", path, line);
      q.hops = hops->get<int>();
    }
    qs.push_back(std::move(q));
  });
  if (qs.empty()) fail("{}: no questions", path);
  return qs;
}

}  // namespace skiff::memory

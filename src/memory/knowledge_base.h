// The knowledge base and question files of memory-augmented generation, as
// scripts/knowledge_qa.py writes them (JSON Lines):
//   kb.jsonl         {"id": "p000001", "kind": "passage" | "qa", "text": "..."}
//   questions.jsonl  {"question": "...", "answer": "...", "hops": 1,
//                     "hop_ids": [["p000001", "q000004"], ...]}: per hop, the entries that
//                     each state that hop's fact (any one of them suffices); without
//                     hop_ids, "ids": [...] lists entries that are all needed
#pragma once

#include <string>
#include <vector>

#include "memory/store.h"

namespace skiff::memory {

struct KbEntry {
  std::string id;
  EntryKind kind = EntryKind::kPassage;
  std::string text;
};

struct Question {
  std::string question, answer;
  // Per hop, the entries stating that hop's fact: the answer is in a set of entries when
  // each hop has one of its entries in the set.
  std::vector<std::vector<std::string>> hop_ids;
  int hops = 1;
};

// Throw Error naming the file, the line and what is wrong (bad JSON, a missing or mistyped
// field, an empty text, a duplicate id).
std::vector<KbEntry> read_kb(const std::string& path);
std::vector<Question> read_questions(const std::string& path);

}  // namespace skiff::memory

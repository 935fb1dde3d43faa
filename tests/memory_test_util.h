// A small knowledge base the memory tests build stores from.
#pragma once

#include <vector>

#include "memory/knowledge_base.h"

namespace skiff::test {

inline const std::vector<memory::KbEntry> kKb = {
    {"p1", memory::EntryKind::kPassage, "Bomira lives in Karat. Bomira has a pet cat. Tavek likes the color red."},
    {"q1", memory::EntryKind::kQa, "Q: What pet does Bomira have? A: cat."},
    {"p2", memory::EntryKind::kPassage, "Tavek works as a baker. Tavek has a friend named Bomira."},
    {"q2", memory::EntryKind::kQa, "Q: What does Tavek like to eat? A: cake."},
    {"p3", memory::EntryKind::kPassage, "Lomi likes the color blue. Lomi lives in Fendo."},
};

}  // namespace skiff::test

// What `skiff bench --self-spec ...` and `skiff sweep` share: the prompt set (bench/prompts),
// the drafter built from the flags, and the result table's formats.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "decode/early_exit_drafter.h"
#include "decode/spec_bench.h"
#include "model/model.h"

namespace skiff::cli {

// Reads a jsonl prompt set ({"task", "prompt"} per line) and tokenizes it (with BOS as the
// vocabulary says). An empty path finds bench/prompts/speculative.jsonl beside the current
// directory or the executable's parent; failing that, a built-in set of three prompts.
// `source` receives where the prompts came from.
std::vector<SpecBenchPrompt> load_spec_prompts(const std::string& path, const Tokenizer& tokenizer,
                                               std::string& source);

// One row of results as JSON (every number SpecBenchResult has) plus the run's settings.
nlohmann::json spec_result_json(const SpecBenchResult& r, const nlohmann::json& settings);

// --draft-head TYPE: the early head's copy (decode/early_exit_drafter.h); null for "" and
// for the type the head already has.
std::shared_ptr<const DraftHead> draft_head_from_flag(const Model& model, const std::string& type);
// --self-spec E --draft-copy TYPE: layers 0..E-1 and the head of `model` as a TYPE copy that
// drafts in its own KV cache (decode/early_exit_copy.h); null for "".
std::unique_ptr<Model> early_exit_copy_from_flag(const Model& model, int exit_layer, const std::string& type);
// The type a --draft-copy value names; Error unless q8_0 or q4_0.
DType draft_copy_type(const std::string& type);
// Error when --draft-copy is combined with a self-speculation option it cannot take (those
// work on the shared KV cache): `given` names the options that were set.
void check_draft_copy_alone(const std::vector<std::string>& given);

}  // namespace skiff::cli

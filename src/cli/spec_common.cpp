#include "cli/spec_common.h"

#include <unistd.h>

#include <climits>
#include <filesystem>
#include <fstream>

#include "base/error.h"
#include "cli/common.h"
#include "tensor/dtype.h"

namespace skiff::cli {

namespace {

const char* kDefaultPrompts = "bench/prompts/speculative.jsonl";

// Used only when the repository's prompt file cannot be found (an installed binary).
const char* kBuiltinPrompts[][2] = {
    {"story", "Once upon a time, there was a little girl named Lily. She loved to play in the park with her red ball. One day,"},
    {"summary", "Story: Ben found a little puppy in the rain. Ben took the puppy home and gave it a warm bath. "
                "His dad said they could keep it. Ben named the puppy Spot, and they became best friends.\n"
                "Summary: In this story,"},
    {"code", "for (int i = 0; i < n; i++) {\n    if (a[i] > max) {\n        max = a[i];\n    }\n}\n"
             "for (int i = 0; i < n; i++) {\n    if (a[i] < min) {\n"},
};

std::string find_default_prompts() {
  namespace fs = std::filesystem;
  std::vector<fs::path> candidates = {fs::path(kDefaultPrompts)};
  char exe[PATH_MAX];
  ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (len > 0) {
    exe[len] = '\0';
    fs::path dir = fs::path(exe).parent_path();
    candidates.push_back(dir / kDefaultPrompts);
    candidates.push_back(dir.parent_path() / kDefaultPrompts);
  }
  for (const fs::path& p : candidates) {
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) return p.string();
  }
  return "";
}

}  // namespace

std::vector<SpecBenchPrompt> load_spec_prompts(const std::string& path, const Tokenizer& tokenizer,
                                               std::string& source) {
  std::vector<std::pair<std::string, std::string>> texts;
  source = path.empty() ? find_default_prompts() : path;
  if (source.empty()) {
    source = "built-in";
    for (const auto& p : kBuiltinPrompts) texts.emplace_back(p[0], p[1]);
  } else {
    std::string all = read_text_file(source);
    size_t line_no = 0, begin = 0;
    while (begin < all.size()) {
      size_t end = all.find('\n', begin);
      if (end == std::string::npos) end = all.size();
      std::string line = all.substr(begin, end - begin);
      begin = end + 1;
      ++line_no;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        fail("{}:{}: not a JSON object ({})", source, line_no, e.what());
      }
      if (!j.is_object() || !j.contains("prompt") || !j["prompt"].is_string())
        fail("{}:{}: each line must be an object with a string \"prompt\"", source, line_no);
      std::string task = j.contains("task") && j["task"].is_string() ? j["task"].get<std::string>() : "prompt";
      texts.emplace_back(task, j["prompt"].get<std::string>());
    }
    if (texts.empty()) fail("{}: no prompts", source);
  }
  std::vector<SpecBenchPrompt> prompts;
  for (const auto& [task, text] : texts) {
    SpecBenchPrompt p;
    p.task = task;
    p.tokens = tokenizer.encode(text, tokenizer.vocab().add_bos);
    if (p.tokens.empty()) p.tokens.push_back(tokenizer.bos());
    prompts.push_back(std::move(p));
  }
  return prompts;
}

nlohmann::json spec_result_json(const SpecBenchResult& r, const nlohmann::json& settings) {
  nlohmann::json j = settings;
  j["task"] = r.task;
  j["prompts"] = r.prompts;
  j["ar_tokens"] = r.ar_tokens;
  j["spec_tokens"] = r.spec_tokens;
  j["ar_seconds"] = r.ar_seconds;
  j["spec_seconds"] = r.spec_seconds;
  j["ar_tps"] = r.ar_tps;
  j["spec_tps"] = r.spec_tps;
  j["speedup"] = r.speedup;
  j["acceptance_rate"] = r.acceptance_rate;
  j["mean_accepted_length"] = r.mean_accepted_length;
  j["tokens_per_round"] = r.tokens_per_round;
  j["draft_step_cost"] = r.draft_step_cost;
  j["draft_cost_per_token"] = r.draft_cost_per_token;
  j["verify_cost"] = r.verify_cost;
  j["rounds"] = r.rounds;
  j["drafted"] = r.drafted;
  j["accepted"] = r.accepted;
  j["draft_steps"] = r.draft_steps;
  if (settings.value("temperature", 0.0) == 0.0) j["identical"] = r.identical;
  return j;
}

std::shared_ptr<const DraftHead> draft_head_from_flag(const Model& model, const std::string& type) {
  if (type.empty()) return nullptr;
  const std::optional<DType> t = parse_dtype(type);
  if (!t) fail("--draft-head '{}': not a type name (q8_0 or q4_0)", type);
  if (*t == model.output.type && (*t == DType::Q8_0 || *t == DType::Q4_0)) return nullptr;  // the head already is
  return make_draft_head(model, *t);
}

DType draft_copy_type(const std::string& type) {
  const std::optional<DType> t = parse_dtype(type);
  if (!t || (*t != DType::Q8_0 && *t != DType::Q4_0)) fail("--draft-copy '{}': the copy can be q8_0 or q4_0", type);
  return *t;
}

std::unique_ptr<Model> early_exit_copy_from_flag(const Model& model, int exit_layer, const std::string& type) {
  if (type.empty()) return nullptr;
  return make_early_exit_copy(model, exit_layer, draft_copy_type(type));
}

void check_draft_copy_alone(const std::vector<std::string>& given) {
  if (given.empty()) return;
  std::string names;
  for (const std::string& g : given) names += (names.empty() ? "" : ", ") + g;
  fail("--draft-copy drafts in a KV cache of its own and does not take {} (options of the shared-cache "
       "self-speculation)", names);
}

}  // namespace skiff::cli

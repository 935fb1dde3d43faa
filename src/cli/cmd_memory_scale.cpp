// skiff memory add|index|search-bench: growing a store and searching a large one.
//   add           appends knowledge-base entries to a store, encoding only them
//   index         (re)builds a store's HNSW index, STORE.hnsw (memory/ann.h), without the model
//   search-bench  exact against HNSW search on a store's questions: latency per query and
//                 recall@k of HNSW against exact (how docs/MEMORY.md "Scale" was measured):
//                 the share of exact search's k best that HNSW finds, ties counted as found
#include <fmt/format.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <cstdio>

#include "base/error.h"
#include "cli/cmd_memory.h"
#include "cli/common.h"
#include "memory/ann.h"
#include "memory/build.h"
#include "memory/knowledge_base.h"
#include "memory/query.h"
#include "memory/reader.h"
#include "memory/store.h"

namespace skiff::cli {

void add_ann_flag(CLI::App* cmd, std::string& mode) {
  cmd->add_option("--ann", mode,
                  fmt::format("write an HNSW index STORE.hnsw for approximate search: auto (default: when the store "
                              "has more than {} entries), on or off",
                              memory::kAnnAutoThreshold))
      ->check(CLI::IsMember({"auto", "on", "off"}));
}

memory::AnnMode parse_ann_mode(const std::string& mode) {
  return mode == "on" ? memory::AnnMode::kOn : mode == "off" ? memory::AnnMode::kOff : memory::AnnMode::kAuto;
}

void add_search_flags(CLI::App* cmd, int& ef, bool& exact) {
  cmd->add_option("--ef", ef,
                  fmt::format("candidates of the HNSW search when the store has an index STORE.hnsw (default {})",
                              memory::kDefaultEf))
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_flag("--exact", exact, "search every entry even when the store has an index");
}

namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

void register_add(CLI::App* parent) {
  struct Flags {
    ModelFlags model;
    std::string store, kb, out, ann = "auto";
  };
  auto f = std::make_shared<Flags>();
  CLI::App* cmd = parent->add_subcommand(
      "add", "append knowledge-base entries to a store, encoding only them (the lexical IDF is refitted)");
  f->model.builtin = BuiltinModel::kReader;
  add_model_flags(cmd, f->model);
  cmd->add_option("--store", f->store, "the store to add to (skiff memory build)")->required();
  cmd->add_option("--kb", f->kb, "the entries to add: JSON Lines of {id, kind, text}, ids new to the store")
      ->required();
  cmd->add_option("-o,--output", f->out, "write the result here (default: replace the store)");
  add_ann_flag(cmd, f->ann);
  cmd->callback([f] {
    const std::vector<memory::KbEntry> kb = memory::read_kb(f->kb);
    const std::string out = f->out.empty() ? f->store : f->out;
    memory::BuildStats s;
    {
      const memory::MemoryStore base(f->store);
      const std::unique_ptr<Model> model = open_model(f->model);
      memory::BuildOptions opt;
      opt.threads = f->model.threads;
      opt.ann = parse_ann_mode(f->ann);
      opt.progress = [](size_t done, size_t total) {
        draw_progress("memory add", static_cast<int>(done), static_cast<int>(total));
      };
      s = memory::add_to_store(*model, base, kb, out, opt);
    }
    std::printf("%s: %zu entries (%zu added), %lld tokens, %.2f MiB, written in %.2f s\n", out.c_str(), s.entries,
                kb.size(), static_cast<long long>(s.tokens), static_cast<double>(s.file_bytes) / (1 << 20), s.seconds);
    if (s.ann_bytes)
      std::printf("%s: HNSW index, %.2f MiB, built in %.2f s\n", memory::ann_path(out).c_str(),
                  static_cast<double>(s.ann_bytes) / (1 << 20), s.ann_seconds);
  });
}

void register_index(CLI::App* parent) {
  struct Flags {
    std::string store;
    memory::AnnParams params;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* cmd = parent->add_subcommand("index", "build a store's HNSW index STORE.hnsw (no model needed)");
  cmd->add_option("--store", f->store, "the store (skiff memory build)")->required();
  cmd->add_option("--hnsw-m", f->params.M, "neighbours per node (default 16)")->check(CLI::Range(2, 1024));
  cmd->add_option("--ef-construction", f->params.ef_construction, "candidates while inserting (default 200)")
      ->check(CLI::Range(1, 1 << 16));
  cmd->callback([f] {
    const memory::MemoryStore store(f->store);
    const auto t0 = std::chrono::steady_clock::now();
    const uint64_t bytes = memory::AnnIndex(store, f->params).save(memory::ann_path(f->store));
    std::printf("%s: HNSW index of %zu entries, %.2f MiB, built in %.2f s\n", memory::ann_path(f->store).c_str(),
                store.size(), static_cast<double>(bytes) / (1 << 20), ms_since(t0) / 1000);
  });
}

void register_search_bench(CLI::App* parent) {
  struct Flags {
    ModelFlags model;
    std::string store, questions, efs = "16,32,64,128";
    int k = 8, limit = 1000;
    size_t first = 0;
    memory::AnnParams params;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* cmd = parent->add_subcommand(
      "search-bench", "time exact and HNSW search on a store's questions; recall@k of HNSW against exact");
  f->model.builtin = BuiltinModel::kReader;
  add_model_flags(cmd, f->model);
  cmd->add_option("--store", f->store, "the store")->required();
  cmd->add_option("--questions", f->questions, "questions whose retrieval vectors are the queries")->required();
  cmd->add_option("-k", f->k, "entries per query (default 8)");
  cmd->add_option("--limit", f->limit, "at most this many questions (default 1000)")->check(CLI::PositiveNumber);
  cmd->add_option("--ef", f->efs, "comma-separated ef values (default 16,32,64,128)");
  cmd->add_option("--first", f->first,
                  "search only the first N entries, with an index built over them in memory (default: all, with "
                  "STORE.hnsw when present)");
  cmd->add_option("--hnsw-m", f->params.M, "M of an index built here (default 16)")->check(CLI::Range(2, 1024));
  cmd->add_option("--ef-construction", f->params.ef_construction, "of an index built here (default 200)")
      ->check(CLI::Range(1, 1 << 16));
  cmd->callback([f] {
    std::vector<int> efs;
    for (const std::string& e : CLI::detail::split(f->efs, ',')) {
      try {
        efs.push_back(std::stoi(e));
      } catch (const std::exception&) {
        fail("--ef: \"{}\" is not a number", e);
      }
      if (efs.back() < 1) fail("--ef: {} must be at least 1", efs.back());
    }
    std::vector<memory::Question> questions = memory::read_questions(f->questions);
    if (static_cast<size_t>(f->limit) < questions.size()) questions.resize(static_cast<size_t>(f->limit));
    const memory::MemoryStore store(f->store);
    const std::unique_ptr<Model> model = open_model(f->model);
    memory::Reader reader(*model, &store, 0, f->model.threads);
    const size_t n = f->first == 0 ? store.size() : std::min(f->first, store.size());
    auto t0 = std::chrono::steady_clock::now();
    std::unique_ptr<memory::AnnIndex> ann =
        n == store.size() ? memory::AnnIndex::load_if_present(store) : nullptr;
    const char* how = "loaded";
    if (!ann) {
      ann = std::make_unique<memory::AnnIndex>(store, f->params, n);
      how = "built";
    }
    const double index_ms = ms_since(t0);
    std::vector<std::vector<float>> queries;
    for (const memory::Question& q : questions) queries.push_back(reader.query_vector(q.question));
    // Exact first: the reference every ef is compared with.
    std::vector<std::vector<memory::Hit>> truth;
    std::vector<double> ms;
    for (const auto& q : queries) {
      t0 = std::chrono::steady_clock::now();
      truth.push_back(memory::search_exact(store, q, f->k, n));
      ms.push_back(ms_since(t0));
    }
    std::printf("%zu entries of width %u, %zu queries, k = %d; index %s in %.0f ms\n", n, store.header().vector_dim,
                queries.size(), f->k, how, index_ms);
    std::printf("| search | ef | p50 ms | p95 ms | recall@%d |\n|---|---|---|---|---|\n", f->k);
    std::printf("| exact | - | %.3f | %.3f | 1.000 |\n", percentile(ms, 0.5), percentile(ms, 0.95));
    for (int ef : efs) {
      ms.clear();
      double found = 0;
      for (size_t i = 0; i < queries.size(); ++i) {
        t0 = std::chrono::steady_clock::now();
        const std::vector<memory::Hit> hits = ann->search(queries[i], f->k, ef);
        ms.push_back(ms_since(t0));
        // Found: scored at least as high as exact search's k-th (entries with equal vectors
        // are interchangeable; the knowledge bases repeat some QA texts).
        for (const memory::Hit& h : hits) found += h.score >= truth[i].back().score;
      }
      std::printf("| hnsw | %d | %.3f | %.3f | %.3f |\n", ef, percentile(ms, 0.5), percentile(ms, 0.95),
                  found / static_cast<double>(queries.size() * static_cast<size_t>(f->k)));
    }
  });
}

// What the retriever returns for every question, as JSON Lines (training episodes that read
// what retrieval puts before a question: scripts/knowledge_qa.py --retrieved).
void register_retrieve(CLI::App* parent) {
  struct Flags {
    ModelFlags model;
    std::string store, questions;
    int k = 8, ef = memory::kDefaultEf;
    bool exact = false;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* cmd = parent->add_subcommand(
      "retrieve", "print the k entries retrieved for each question: JSON Lines {\"question\", \"ids\"}, best first");
  f->model.builtin = BuiltinModel::kReader;
  add_model_flags(cmd, f->model);
  cmd->add_option("--store", f->store, "the store")->required();
  cmd->add_option("--questions", f->questions, "questions: JSON Lines with a \"question\" each")->required();
  cmd->add_option("-k", f->k, "entries per question (default 8)")->check(CLI::PositiveNumber);
  add_search_flags(cmd, f->ef, f->exact);
  cmd->callback([f] {
    const std::vector<memory::Question> questions = memory::read_questions(f->questions);
    const memory::MemoryStore store(f->store);
    const std::unique_ptr<Model> model = open_model(f->model);
    memory::QueryRetriever retriever(*model, store);
    const std::unique_ptr<memory::AnnIndex> ann = f->exact ? nullptr : memory::AnnIndex::load_if_present(store);
    retriever.use_index(ann.get(), f->ef);
    for (const memory::Question& q : questions) {
      nlohmann::json ids = nlohmann::json::array();
      for (size_t i : retriever.top_k(q.question, f->k)) ids.push_back(std::string(store.entry(i).id));
      std::printf("%s\n", nlohmann::json{{"question", q.question}, {"ids", ids}}.dump().c_str());
    }
  });
}

}  // namespace

void register_memory_scale(CLI::App* parent) {
  register_add(parent);
  register_retrieve(parent);
  register_index(parent);
  register_search_bench(parent);
}

}  // namespace skiff::cli

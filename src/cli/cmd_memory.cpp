// skiff memory build|ask|eval: memory-augmented generation (docs/MEMORY.md). Knowledge
// entries are encoded once into a store; a question retrieves k of them and splices their
// keys and values into the context instead of prefilling their text. add, index and
// search-bench (large stores) are in cmd_memory_scale.cpp.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>

#include "base/error.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "cli/cmd_memory.h"
#include "memory/ann.h"
#include "memory/build.h"
#include "memory/compress.h"
#include "memory/knowledge_base.h"
#include "memory/reader.h"
#include "memory/store.h"

namespace skiff::cli {

namespace {

using memory::Method;

void print_index(const std::string& store, const memory::BuildStats& s) {
  if (s.ann_bytes)
    std::printf("%s: HNSW index, %.2f MiB, built in %.2f s\n", memory::ann_path(store).c_str(),
                static_cast<double>(s.ann_bytes) / (1 << 20), s.ann_seconds);
}

KvTypes store_types(const std::string& name) {
  const std::optional<DType> t = parse_kv_type(name);
  if (!t) fail("--kv-type must be f32, f16 or q8_0, got \"{}\"", name);
  return {*t, *t};
}

void register_build(CLI::App* parent) {
  struct Flags {
    ModelFlags model;
    std::string kb, out, kv_type = "f16", retriever = "lexical", ann = "auto", slot_probe = memory::kDefaultSlotProbe;
    int lexical_dim = 1024, slots = 0;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* cmd = parent->add_subcommand("build", "encode a knowledge base (kb.jsonl) into a memory store");
  f->model.builtin = BuiltinModel::kReader;
  add_model_flags(cmd, f->model);
  cmd->add_option("--kb", f->kb, "knowledge base: JSON Lines of {id, kind, text}")->required();
  cmd->add_option("-o,--output", f->out, "the store file to write")->required();
  cmd->add_option("--kv-type", f->kv_type, "element type of the stored keys and values: f32, f16 (default), q8_0");
  cmd->add_option("--retriever", f->retriever,
                  "retrieval vectors: lexical (hashed TF-IDF token uni- and bigrams, default) or hidden (pooled "
                  "final hidden states)")
      ->check(CLI::IsMember({"lexical", "hidden"}));
  cmd->add_option("--lexical-dim", f->lexical_dim, "buckets of the lexical retriever (default 1024)")
      ->check(CLI::Range(16, 1 << 16));
  cmd->add_option("--slots", f->slots,
                  "compressed memories: keep M key/value rows per entry and layer, those the entry's own attention "
                  "uses most (default 0: every token's)")
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--slot-probe", f->slot_probe,
                  "with --slots: the text run after each entry whose attention picks the kept rows (default \"Q: A:\", "
                  "the reader's question template; \"\": the entry's own attention)");
  add_ann_flag(cmd, f->ann);
  cmd->callback([f] {
    const KvTypes types = store_types(f->kv_type);
    const std::vector<memory::KbEntry> kb = memory::read_kb(f->kb);
    const std::unique_ptr<Model> model = open_model(f->model);
    memory::BuildOptions opt;
    opt.types = types;
    opt.threads = f->model.threads;
    opt.retriever = f->retriever == "hidden" ? memory::Retriever::kHidden : memory::Retriever::kLexical;
    opt.lexical_dim = f->lexical_dim;
    opt.slots = f->slots;
    opt.slot_probe = f->slot_probe;
    opt.ann = parse_ann_mode(f->ann);
    opt.progress = [](size_t done, size_t total) {
      draw_progress("memory build", static_cast<int>(done), static_cast<int>(total));
    };
    const memory::BuildStats s = memory::build_store(*model, kb, f->out, opt);
    std::printf("%s: %zu entries, %lld tokens, %.2f MiB (%.0f bytes per entry), built in %.2f s\n", f->out.c_str(),
                s.entries, static_cast<long long>(s.tokens), static_cast<double>(s.file_bytes) / (1 << 20),
                static_cast<double>(s.file_bytes) / static_cast<double>(s.entries), s.seconds);
    print_index(f->out, s);
  });
}

void add_recompute_flag(CLI::App* cmd, int& rows) {
  cmd->add_option("--recompute", rows,
                  "splice-recompute: prefill each entry's last N tokens anew, seeing everything before them "
                  "(default 10)")
      ->check(CLI::Range(1, 1 << 20));
}

void register_ask(CLI::App* parent) {
  struct Flags {
    ModelFlags model;
    std::string store, prompt, method = "splice", entries, dump;
    int k = 8, context = 0, max_tokens = 32, ef = memory::kDefaultEf, recompute = 10;
    bool verbose = false, exact = false;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* cmd = parent->add_subcommand("ask", "answer a question from a memory store");
  f->model.builtin = BuiltinModel::kReader;
  add_model_flags(cmd, f->model);
  cmd->add_option("--store", f->store, "memory store (skiff memory build)")->required();
  cmd->add_option("-p,--prompt", f->prompt, "the question")->required();
  cmd->add_option("-k", f->k, "entries to retrieve (default 8)");
  cmd->add_option("--method", f->method,
                  "splice (default), splice-recompute, read, read-block, splice-uncorrected or none");
  add_recompute_flag(cmd, f->recompute);
  cmd->add_option("-c,--ctx-size", f->context, "context length (default: the model's, at most 4096)");
  cmd->add_option("-n,--max-tokens", f->max_tokens, "longest answer in tokens (default 32)")->check(CLI::Range(1, 4096));
  cmd->add_flag("-v,--verbose", f->verbose, "print the retrieved entries and the time to first token");
  cmd->add_option("--entries", f->entries, "read these entries (comma-separated ids) instead of retrieving");
  add_search_flags(cmd, f->ef, f->exact);
  cmd->add_option("--dump", f->dump, "test hook: write the sequence, its block starts and the first logits as JSON")
      ->group("");
  cmd->callback([f] {
    const std::optional<Method> method = memory::parse_method(f->method);
    if (!method || *method == Method::kOracle)
      fail("--method must be splice, splice-recompute, read, read-block, splice-uncorrected or none, got \"{}\"",
           f->method);
    const memory::MemoryStore store(f->store);
    const std::unique_ptr<Model> model = open_model(f->model);
    memory::Reader reader(*model, &store, f->context, f->model.threads);
    reader.set_recompute(f->recompute);
    const std::unique_ptr<memory::AnnIndex> ann = f->exact ? nullptr : memory::AnnIndex::load_if_present(store);
    reader.use_index(ann.get(), f->ef);
    std::vector<size_t> given;
    if (!f->entries.empty()) {
      const auto index = store.index_by_id();
      for (const std::string& id : CLI::detail::split(f->entries, ',')) {
        auto it = index.find(id);
        if (it == index.end()) fail("--entries: {} holds no entry \"{}\"", f->store, id);
        given.push_back(it->second);
      }
    }
    const memory::Answer a = reader.answer(*method, f->prompt, f->k, given, f->max_tokens);
    if (!f->dump.empty()) {
      const memory::Reader::Layout seq =
          reader.layout(*method, a.entries, memory::question_tokens(*model->tokenizer, f->prompt));
      std::FILE* out = std::fopen(f->dump.c_str(), "w");
      if (!out) fail("{}: cannot write", f->dump);
      auto ints = [](const std::vector<int32_t>& v) { return fmt::format("[{}]", fmt::join(v, ", ")); };
      std::fprintf(out, "{\"tokens\": %s, \"first_visible\": %s, \"logits\": [%s]}\n", ints(seq.tokens).c_str(),
                   ints(seq.first_visible).c_str(), fmt::format("{:.9g}", fmt::join(a.first_logits, ", ")).c_str());
      std::fclose(out);
    }
    if (f->verbose) {
      for (size_t e : a.entries) std::fprintf(stderr, "[%s] %.*s\n", std::string(store.entry(e).id).c_str(),
                                              static_cast<int>(store.entry(e).text.size()), store.entry(e).text.data());
      std::fprintf(stderr, "time to first token %.1f ms, %d tokens prefilled\n", a.ttft_ms, a.prefill_tokens);
    }
    std::printf("%s\n", a.text.c_str());
  });
}

struct Row {
  std::string method;
  int hops = 0;
  int questions = 0;
  double em = 0, recall = 0, seconds = 0, prefill = 0, entry_bytes = 0;
  int entries_read = 0;
  std::vector<double> ttft;
  bool has_recall = false;
};

}  // namespace

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5));
  return v[i];
}

namespace {

void register_eval(CLI::App* parent) {
  struct Flags {
    ModelFlags model;
    std::string store, questions, methods = "none,oracle,read,read-block,splice,splice-uncorrected,splice-recompute",
                format = "md";
    std::vector<std::string> compressed;
    int k = 8, limit = 0, context = 0, ef = memory::kDefaultEf, batch = 1, recompute = 10;
    bool exact = false;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* cmd = parent->add_subcommand("eval", "compare answering methods on a question set");
  f->model.builtin = BuiltinModel::kReader;
  add_model_flags(cmd, f->model);
  cmd->add_option("--store", f->store, "memory store (skiff memory build)")->required();
  cmd->add_option("--questions", f->questions, "questions: JSON Lines of {question, answer, ids, hops}")->required();
  cmd->add_option("-k", f->k, "entries to retrieve (default 8)");
  cmd->add_option("--limit", f->limit, "at most this many questions (default: all)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--methods", f->methods,
                  "comma-separated methods (default: all): none, oracle, read, read-block, splice, "
                  "splice-uncorrected, splice-recompute");
  add_recompute_flag(cmd, f->recompute);
  cmd->add_option("-c,--ctx-size", f->context, "context length (default: the model's, at most 4096)");
  cmd->add_option("--batch", f->batch,
                  "answer this many questions together, one batched pass per step as a server does (default 1: one "
                  "by one; ttft is then the batch's)")
      ->check(CLI::Range(1, 256));
  cmd->add_option("--compressed", f->compressed,
                  "a compressed store of the same entries (memory build --slots M): adds a row splice-mM that splices "
                  "its entries (repeatable)");
  cmd->add_option("-o,--output", f->format, "md or json")->check(CLI::IsMember({"md", "json"}));
  add_search_flags(cmd, f->ef, f->exact);
  cmd->callback([f] {
    std::vector<Method> methods;
    for (const std::string& name : CLI::detail::split(f->methods, ',')) {
      const std::optional<Method> m = memory::parse_method(name);
      if (!m) fail("--methods: unknown method \"{}\"", name);
      methods.push_back(*m);
    }
    std::vector<memory::Question> questions = memory::read_questions(f->questions);
    if (f->limit > 0 && static_cast<size_t>(f->limit) < questions.size()) questions.resize(static_cast<size_t>(f->limit));
    const memory::MemoryStore store(f->store);
    const std::unique_ptr<Model> model = open_model(f->model);
    const auto index = store.index_by_id();
    // Per question and hop, the store's indices of the entries that state the hop's fact.
    std::vector<std::vector<std::vector<size_t>>> hops(questions.size());
    std::vector<std::vector<size_t>> gold(questions.size());  // what `oracle` reads: one entry per hop
    for (size_t q = 0; q < questions.size(); ++q) {
      for (const std::vector<std::string>& hop : questions[q].hop_ids) {
        hops[q].emplace_back();
        for (const std::string& id : hop) {
          auto it = index.find(id);
          if (it == index.end())
            fail("{}: question {} names entry \"{}\", which {} does not hold", f->questions, q + 1, id, f->store);
          hops[q].back().push_back(it->second);
        }
        gold[q].push_back(hops[q].back().front());
      }
    }
    memory::Reader main_reader(*model, &store, f->context, f->model.threads);
    main_reader.set_recompute(f->recompute);
    const std::unique_ptr<memory::AnnIndex> ann = f->exact ? nullptr : memory::AnnIndex::load_if_present(store);
    main_reader.use_index(ann.get(), f->ef);
    // Each set of rows: a method read through a store (a compressed store splices its own).
    struct Run {
      std::string name;
      Method method;
      memory::Reader* reader;
      const memory::MemoryStore* store;
    };
    std::vector<Run> runs;
    for (Method m : methods)
      runs.push_back({m == Method::kSpliceRecompute ? fmt::format("splice-recompute{}", f->recompute)
                                                     : std::string(memory::method_name(m)),
                      m, &main_reader, &store});
    std::vector<std::unique_ptr<memory::MemoryStore>> small_stores;
    std::vector<std::unique_ptr<memory::AnnIndex>> small_anns;
    std::vector<std::unique_ptr<memory::Reader>> small_readers;
    for (const std::string& path : f->compressed) {
      auto s = std::make_unique<memory::MemoryStore>(path);
      s->check_model(*model);
      if (s->size() != store.size() || s->retriever() != store.retriever())
        fail("--compressed {}: not a store of the same entries as {} ({} entries, {} retriever; {} has {}, {})", path,
             f->store, s->size(), memory::retriever_name(s->retriever()), f->store, store.size(),
             memory::retriever_name(store.retriever()));
      for (size_t i = 0; i < store.size(); ++i) {
        if (s->entry(i).id != store.entry(i).id || s->entry(i).text != store.entry(i).text)
          fail("--compressed {}: entry {} is \"{}\", {} has \"{}\" there", path, i, s->entry(i).id, f->store,
               store.entry(i).id);
      }
      small_readers.push_back(std::make_unique<memory::Reader>(*model, s.get(), f->context, f->model.threads));
      small_anns.push_back(f->exact ? nullptr : memory::AnnIndex::load_if_present(*s));
      small_readers.back()->use_index(small_anns.back().get(), f->ef);
      const std::string name = s->slots() > 0 ? fmt::format("splice-m{}", s->slots()) : "splice " + path;
      runs.push_back({name, Method::kSplice, small_readers.back().get(), s.get()});
      small_stores.push_back(std::move(s));
    }
    std::map<std::pair<size_t, int>, Row> rows;  // (run, hops)
    int done = 0;
    const int total = static_cast<int>(runs.size() * questions.size());
    for (size_t run = 0; run < runs.size(); ++run) {
      const Method m = runs[run].method;
      memory::Reader& reader = *runs[run].reader;
      const memory::MemoryStore& store = *runs[run].store;
      for (size_t q0 = 0; q0 < questions.size(); q0 += static_cast<size_t>(f->batch)) {
        const size_t n = std::min(questions.size() - q0, static_cast<size_t>(f->batch));
        const auto t0 = std::chrono::steady_clock::now();
        std::vector<memory::Answer> answers;
        if (f->batch == 1) {
          answers.push_back(reader.answer(m, questions[q0].question, f->k,
                                          m == Method::kOracle ? std::span<const size_t>(gold[q0]) : std::span<const size_t>()));
        } else {
          std::vector<std::string> texts;
          std::vector<std::vector<size_t>> given;
          for (size_t q = q0; q < q0 + n; ++q) {
            texts.push_back(questions[q].question);
            if (m == Method::kOracle) given.push_back(gold[q]);
          }
          answers = reader.answer_batch(m, texts, f->k, given);
        }
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        for (size_t q = q0; q < q0 + n; ++q) {
          const memory::Answer& a = answers[q - q0];
          Row& r = rows[{run, questions[q].hops}];
          r.method = runs[run].name;
          r.hops = questions[q].hops;
          r.questions += 1;
          r.em += memory::normalize_answer(a.text) == memory::normalize_answer(questions[q].answer);
          r.seconds += s / static_cast<double>(n);
          r.ttft.push_back(a.ttft_ms);
          r.prefill += a.prefill_tokens;
          if (memory::retrieves(m)) {
            r.has_recall = true;
            r.recall += std::all_of(hops[q].begin(), hops[q].end(), [&](const std::vector<size_t>& hop) {
              return std::find_first_of(hop.begin(), hop.end(), a.entries.begin(), a.entries.end()) != hop.end();
            });
          }
          for (size_t e : a.entries) {
            r.entry_bytes += m == Method::kSplice || m == Method::kSpliceUncorrected || m == Method::kSpliceRecompute
                                 ? static_cast<double>(store.entry_bytes(e))
                                 : static_cast<double>(store.entry(e).text.size());
            r.entries_read += 1;
          }
          draw_progress("memory eval", ++done, total);
        }
      }
    }
    if (f->format == "json") std::printf("[\n");
    else {
      std::printf("| method | hops | questions | em | recall_at_k | ttft_ms_p50 | ttft_ms_p95 | questions_per_s | "
                  "prefill_tokens_per_question | bytes_per_entry |\n");
      std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
    }
    size_t i = 0;
    for (auto& [key, r] : rows) {
      const double n = r.questions;
      const std::string recall = r.has_recall ? fmt::format("{:.3f}", r.recall / n) : (f->format == "json" ? "null" : "-");
      const double bytes = r.entries_read ? r.entry_bytes / r.entries_read : 0;
      if (f->format == "json")
        std::printf("  {\"method\": \"%s\", \"hops\": %d, \"questions\": %d, \"em\": %.4f, \"recall_at_k\": %s, "
                    "\"k\": %d, \"ttft_ms_p50\": %.3f, \"ttft_ms_p95\": %.3f, \"questions_per_s\": %.3f, "
                    "\"prefill_tokens_per_question\": %.1f, \"bytes_per_entry\": %.1f}%s\n",
                    r.method.c_str(), r.hops, r.questions, r.em / n, recall.c_str(), f->k, percentile(r.ttft, 0.5),
                    percentile(r.ttft, 0.95), n / r.seconds, r.prefill / n, bytes, ++i < rows.size() ? "," : "");
      else
        std::printf("| %s | %d | %d | %.3f | %s | %.2f | %.2f | %.2f | %.1f | %.0f |\n", r.method.c_str(), r.hops,
                    r.questions, r.em / n, recall.c_str(), percentile(r.ttft, 0.5), percentile(r.ttft, 0.95),
                    n / r.seconds, r.prefill / n, bytes);
    }
    if (f->format == "json") std::printf("]\n");
  });
}

}  // namespace

void register_memory(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("memory", "memory-augmented generation: knowledge entries spliced in as KV");
  cmd->require_subcommand(1);
  register_build(cmd);
  register_ask(cmd);
  register_eval(cmd);
  register_memory_scale(cmd);
}

}  // namespace skiff::cli

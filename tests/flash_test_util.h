// Shared by the flash tests: a temporary folder, a small ReLU-gated random model shape, a
// fixed token sequence and its logits, and a flash run wired into a Context.
#pragma once

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "flash/flash_run.h"
#include "model/forward.h"
#include "speculative_test_util.h"

namespace skiff::flash::testing_flash {

using testing_spec::RandomShape;

class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() /
            ("skiff-flash-ffn-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
  static inline int counter_ = 0;
};

inline RandomShape relu_shape(uint32_t seed) {
  RandomShape s;
  s.dim = 40;
  s.n_layers = 3;
  s.n_heads = 4;
  s.n_kv_heads = 2;
  s.ffn_dim = 72;
  s.context = 64;
  s.vocab = 24;
  s.seed = seed;
  s.relu = true;
  return s;
}

inline const std::vector<int32_t> kPrompt = {1, 5, 9, 3, 17};
inline const std::vector<int32_t> kSteps = {4, 8, 15, 16, 23, 2, 7, 11, 19, 6, 13, 21};

// Logits after the prompt and after each step, from a Context the caller configured.
inline std::vector<std::vector<float>> run_sequence(Context& ctx) {
  std::vector<std::vector<float>> out;
  out.push_back(eval_tokens(ctx, kPrompt));
  for (int32_t t : kSteps) out.push_back(eval_tokens(ctx, std::span<const int32_t>(&t, 1)));
  return out;
}

inline void expect_close(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b,
                  float tol) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t s = 0; s < a.size(); ++s) {
    ASSERT_EQ(a[s].size(), b[s].size());
    for (size_t i = 0; i < a[s].size(); ++i)
      ASSERT_NEAR(a[s][i], b[s][i], tol * (1.0f + std::fabs(b[s][i]))) << "step " << s << " logit " << i;
  }
}

// A flash run over a pack and a Context whose FFN it provides.
struct FlashSession {
  FlashSession(const std::string& pack, const FlashOptions& o, const std::string& budget, int threads)
      : run(open_flash(load_pack(pack), o, budget, 0, 8, threads)), ctx(run->model(), 0, threads) {
    ctx.set_ffn_provider(run->ffn.get());
  }
  std::unique_ptr<FlashRun> run;
  Context ctx;
};

}  // namespace skiff::flash::testing_flash

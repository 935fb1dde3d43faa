// The training loop: micro-batches with layer dropout, the (early-exit) loss, gradient
// accumulation, NaN/Inf guard, clipping, AdamW; a progress line, a CSV log (with the FFN
// activation sparsity and its L1 penalty when training a ReLU-gated model), periodic
// evaluation (validation loss and top-1 agreement with the final layer after every layer),
// an SVG of those curves, and checkpoints; optionally a mix of block-attention QA episodes
// (episodes.h) in every batch. Files beside the checkpoint <stem>.gguf:
// <stem>.state (resume), <stem>.log.csv, <stem>.eval.csv, <stem>.svg.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "train/checkpoint.h"
#include "train/data.h"
#include "train/episodes.h"
#include "train/layerskip.h"
#include "train/optimizer.h"
#include "train/plot.h"
#include "train/train_model.h"

namespace skiff::train {

struct TrainOptions {
  int batch = 8;
  int accum = 1;
  int64_t steps = 100;
  OptimizerConfig opt;
  double layer_dropout = 0.0;  // P_MAX
  double episode_mix = 0.5;    // with episodes: the fraction of samples that are episode windows
  DropoutCurriculum dropout_curriculum = DropoutCurriculum::Constant;
  bool early_exit = false;
  double e_scale = 1.0;
  ExitCurriculum exit_curriculum;
  double exit_distill = 0;      // LossSpec::exit_distill (needs early_exit)
  double activation_l1 = 0;     // LossSpec::activation_l1 (ReLU-gated models only)
  uint64_t seed = 1;
  std::string out;              // checkpoint path (.gguf); empty: no files at all
  std::string name = "skiff-layerskip";
  int64_t save_every = 0;       // 0: at the end only
  int64_t eval_every = 0;       // 0: at the end only
  int eval_batches = 4;         // batches of `batch` validation windows
  bool resume = false;
  bool progress = true;         // the progress line on stderr
  // Test hooks: write each step's tokens and dropout masks under this folder; poison the
  // gradients with NaN at this step (counted from 0); SIGKILL the process in the middle of the
  // checkpoint written after this many steps (the model written, its state not yet).
  std::string debug_dump;
  int64_t debug_nan_step = -1;
  int64_t debug_kill_mid_save = -1;
  int64_t stop_after = -1;  // return after this step, as if interrupted (tests)
};

struct EvalResult {
  std::vector<double> loss, agree;  // per exit layer (after layer l, l = 0..L-1)
};

// Evaluates on the first `batches` x B validation windows without dropout.
EvalResult evaluate(TrainModel& model, const Dataset& data, int batches);

// The loss spec of `step`: the final layer only, or the early-exit layers and scales (and the
// exits' self-distillation weight); the activation L1 penalty.
LossSpec loss_spec(const TrainOptions& o, int n_layers, int64_t step);

struct TrainSummary {
  int64_t first_step = 0, last_step = 0;
  std::vector<double> losses;  // per step run here
  double tokens_per_second = 0;
  EvalResult initial_eval;  // at step 0, when evaluating periodically from the start
  EvalResult final_eval;
};

// Runs steps [start, o.steps) where start is 0 or the resumed step. Throws Error on NaN/Inf
// (after writing nothing) or I/O failures. With `episodes`, episode_samples(m, B,
// o.episode_mix) of micro-batch m's samples (m counts micro-batches over the run) are
// episode windows (block attention, loss mask), the rest text windows; the episode windows
// drawn before m follow from m alone, so a resumed run continues them exactly.
TrainSummary run_training(TrainModel& model, Dataset& data, const Tokenizer& tokenizer,
                          const TrainOptions& o, ThreadPool& pool, EpisodeSet* episodes = nullptr);

}  // namespace skiff::train

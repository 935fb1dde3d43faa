// LayerSkip's training recipe (Elhoushi et al., ACL 2024), as torchtune's reference code
// defines it:
// - layer dropout: layer l of L is skipped, per sample, with probability
//   p(l, t) = p_max * S(t) * D(l), D(l) = exp(l ln2 / (L-1)) - 1 (0 at the first layer, 1 at
//   the last), S(t) = 1 (constant) or exp(t ln2 / (T-1)) - 1 (exp, for training from scratch);
//   a skipped layer passes its input through unchanged (no rescaling).
// - early-exit loss: the shared final norm + head after each active layer; the losses are
//   weighted by sum_l scales: cumsum over the active layers of (l+1), times e_scale for
//   layers before the last, normalized to sum 1. The last layer is always active.
//   Curricula pick the active layers at step t: none (all), rotational:R (every R-th layer,
//   the pattern rolled by one layer per step, as np.roll), gradual[:F] (layer l joins once
//   t / T >= F * (L - l) / L; F defaults to 0.5 as in torchtune).
// - exit self-distillation (skiff's addition, --exit-distill W): W times the mean, uniform over
//   the active exits before the last layer, of KL(p_final || p_exit) with p_final detached;
//   see LossSpec::exit_distill (train_model.h).
// Randomness is counter-based (a hash of seed, step, micro-step, sample, layer), so a resumed
// run draws exactly the masks an uninterrupted one would.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace skiff::train {

enum class DropoutCurriculum { Constant, Exp };

// S(t): 1 for Constant; 2^(t/(total-1)) - 1 for Exp (1 when total <= 1).
double dropout_time_scale(DropoutCurriculum c, int64_t step, int64_t total_steps);
// p_max * time_scale * (2^(l/(L-1)) - 1); 0 for L == 1.
double layer_dropout_rate(int layer, int n_layers, double p_max, double time_scale);

struct ExitCurriculum {
  enum class Kind { None, Rotational, Gradual };
  Kind kind = Kind::None;
  int rotation = 1;        // R for rotational
  double fraction = 0.5;   // F for gradual
  // "none", "rotational:R", "gradual" or "gradual:F"; throws Error otherwise.
  static ExitCurriculum parse(const std::string& text);
  std::string to_string() const;
};

// Layers that get the early-exit loss at `step` (ascending; always includes n_layers - 1).
std::vector<int> active_exit_layers(const ExitCurriculum& c, int n_layers, int64_t step,
                                    int64_t total_steps);
// Normalized sum_l scales for `layers` (ascending).
std::vector<double> early_exit_scales(const std::vector<int>& layers, int n_layers, double e_scale);

// A uniform double in [0, 1) from a hash of the five numbers (splitmix64 rounds).
double counter_uniform(uint64_t seed, uint64_t a, uint64_t b, uint64_t c, uint64_t d);

// skip[b * L + l] = 1 when sample b skips layer l at (step, micro).
void sample_layer_dropout(uint8_t* skip, int batch, int n_layers, double p_max, double time_scale,
                          uint64_t seed, int64_t step, int micro);

}  // namespace skiff::train

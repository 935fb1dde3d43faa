#include "train/layerskip.h"

#include <cmath>
#include <cstdlib>

#include "base/error.h"
#include "base/hash.h"

namespace skiff::train {

double dropout_time_scale(DropoutCurriculum c, int64_t step, int64_t total_steps) {
  if (c == DropoutCurriculum::Constant || total_steps <= 1) return 1.0;
  return std::exp(static_cast<double>(step) * std::log(2.0) / static_cast<double>(total_steps - 1)) - 1.0;
}

double layer_dropout_rate(int layer, int n_layers, double p_max, double time_scale) {
  if (n_layers <= 1) return 0.0;
  double depth = std::exp(layer * std::log(2.0) / (n_layers - 1)) - 1.0;
  return p_max * time_scale * depth;
}

ExitCurriculum ExitCurriculum::parse(const std::string& text) {
  ExitCurriculum c;
  auto number = [&](const std::string& s) {
    char* end = nullptr;
    double v = std::strtod(s.c_str(), &end);
    if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(v)) 
      fail("early-exit curriculum '{}': '{}' is not a number", text, s);
    return v;
  };
  if (text == "none" || text.empty()) return c;
  if (text.rfind("rotational:", 0) == 0) {
    double r = number(text.substr(11));
    if (r < 1 || r != std::floor(r) || r > 1e6)
      fail("early-exit curriculum '{}': R must be a positive integer", text);
    c.kind = Kind::Rotational;
    c.rotation = static_cast<int>(r);
    return c;
  }
  if (text == "gradual") {
    c.kind = Kind::Gradual;
    return c;
  }
  if (text.rfind("gradual:", 0) == 0) {
    c.kind = Kind::Gradual;
    c.fraction = number(text.substr(8));
    if (c.fraction <= 0 || c.fraction > 1)
      fail("early-exit curriculum '{}': F must be in (0, 1]", text);
    return c;
  }
  fail("early-exit curriculum '{}' is not one of none, rotational:R, gradual[:F]", text);
}

std::string ExitCurriculum::to_string() const {
  switch (kind) {
    case Kind::Rotational: return "rotational:" + std::to_string(rotation);
    case Kind::Gradual: return fmt::format("gradual:{}", fraction);
    default: return "none";
  }
}

std::vector<int> active_exit_layers(const ExitCurriculum& c, int n_layers, int64_t step,
                                    int64_t total_steps) {
  std::vector<int> layers;
  for (int l = 0; l < n_layers; ++l) {
    bool on = true;
    if (c.kind == ExitCurriculum::Kind::Rotational) {
      // initial pattern l % R == 0, rolled right by `step` positions over n_layers
      int64_t src = ((l - step) % n_layers + n_layers) % n_layers;
      on = src % c.rotation == 0;
    } else if (c.kind == ExitCurriculum::Kind::Gradual) {
      double trained = total_steps > 0 ? static_cast<double>(step) / static_cast<double>(total_steps) : 1.0;
      on = trained >= c.fraction * static_cast<double>(n_layers - l) / n_layers;
    }
    if (on || l == n_layers - 1) layers.push_back(l);
  }
  return layers;
}

std::vector<double> early_exit_scales(const std::vector<int>& layers, int n_layers, double e_scale) {
  std::vector<double> s(layers.size());
  double cum = 0.0, total = 0.0;
  for (size_t i = 0; i < layers.size(); ++i) {
    cum += layers[i] + 1;
    s[i] = cum * (layers[i] < n_layers - 1 ? e_scale : 1.0);
    total += s[i];
  }
  for (double& v : s) v /= total;
  return s;
}

double counter_uniform(uint64_t seed, uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
  uint64_t h = splitmix64(seed);
  h = splitmix64(h ^ a);
  h = splitmix64(h ^ b);
  h = splitmix64(h ^ c);
  h = splitmix64(h ^ d);
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

void sample_layer_dropout(uint8_t* skip, int batch, int n_layers, double p_max, double time_scale,
                          uint64_t seed, int64_t step, int micro) {
  for (int b = 0; b < batch; ++b)
    for (int l = 0; l < n_layers; ++l) {
      double p = layer_dropout_rate(l, n_layers, p_max, time_scale);
      skip[b * n_layers + l] =
          p > 0 && counter_uniform(seed ^ 0x4c61796572ull, static_cast<uint64_t>(step),
                                   static_cast<uint64_t>(micro), static_cast<uint64_t>(b),
                                   static_cast<uint64_t>(l)) < p;
    }
}

}  // namespace skiff::train

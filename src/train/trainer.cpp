#include "train/trainer.h"

#include <chrono>
#include <csignal>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "base/error.h"
#include "base/mapped_file.h"

namespace skiff::train {

namespace {

using Clock = std::chrono::steady_clock;

std::string duration_string(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  auto t = static_cast<int64_t>(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02}m", t / 3600, (t / 60) % 60);
  if (t >= 60) return fmt::format("{}m{:02}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

void write_bytes(const std::string& path, const void* p, size_t n) {
  write_file_atomically(path, std::span<const uint8_t>(static_cast<const uint8_t*>(p), n));
}

// Reads back <stem>.eval.csv (step,exit_layer,val_loss,top1_agree) for the plot of a resumed run.
std::vector<EvalPoint> read_eval_csv(const std::string& path, int n_layers, int64_t up_to) {
  std::vector<EvalPoint> pts;
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream ss(line);
    std::string a, b, c, d;
    if (!std::getline(ss, a, ',') || !std::getline(ss, b, ',') || !std::getline(ss, c, ',') || !std::getline(ss, d, ','))
      continue;
    int64_t step = std::atoll(a.c_str());
    int layer = std::atoi(b.c_str()) - 1;
    if (step > up_to || layer < 0 || layer >= n_layers) continue;
    if (pts.empty() || pts.back().step != step) {
      EvalPoint p;
      p.step = step;
      p.loss.assign(static_cast<size_t>(n_layers), NAN);
      p.agree.assign(static_cast<size_t>(n_layers), NAN);
      pts.push_back(p);
    }
    pts.back().loss[static_cast<size_t>(layer)] = std::atof(c.c_str());
    pts.back().agree[static_cast<size_t>(layer)] = std::atof(d.c_str());
  }
  return pts;
}

}  // namespace

EvalResult evaluate(TrainModel& model, const Dataset& data, int batches) {
  const int B = model.batch(), T = model.seq_len(), L = model.config().n_layers;
  const int64_t N = static_cast<int64_t>(B) * T, V = model.config().vocab_size;
  std::vector<int32_t> tokens(static_cast<size_t>(B) * (T + 1));
  std::vector<float> logits(static_cast<size_t>(N * V)), row_loss(static_cast<size_t>(N));
  std::vector<int32_t> final_argmax(static_cast<size_t>(N)), argmax(static_cast<size_t>(N));
  std::vector<double> loss_sum(static_cast<size_t>(L), 0.0);
  std::vector<int64_t> agree(static_cast<size_t>(L), 0);
  int64_t rows = 0;
  for (int i = 0; i < batches; ++i) {
    for (int b = 0; b < B; ++b)
      data.val_window(static_cast<int64_t>(i) * B + b, tokens.data() + static_cast<size_t>(b) * (T + 1));
    model.forward(tokens.data(), nullptr);
    for (int l = L - 1; l >= 0; --l) {
      model.exit_logits(l, logits.data(), row_loss.data(), l == L - 1 ? final_argmax.data() : argmax.data());
      const int32_t* am = l == L - 1 ? final_argmax.data() : argmax.data();
      for (int64_t n = 0; n < N; ++n) {
        loss_sum[static_cast<size_t>(l)] += row_loss[static_cast<size_t>(n)];
        agree[static_cast<size_t>(l)] += am[n] == final_argmax[static_cast<size_t>(n)];
      }
    }
    rows += N;
  }
  EvalResult r;
  for (int l = 0; l < L; ++l) {
    r.loss.push_back(loss_sum[static_cast<size_t>(l)] / static_cast<double>(rows));
    r.agree.push_back(static_cast<double>(agree[static_cast<size_t>(l)]) / static_cast<double>(rows));
  }
  return r;
}

LossSpec loss_spec(const TrainOptions& o, int n_layers, int64_t step) {
  LossSpec s;
  s.activation_l1 = o.activation_l1;
  if (!o.early_exit) {
    s.exit_layers = {n_layers - 1};
    s.scales = {1.0};
    return s;
  }
  s.exit_layers = active_exit_layers(o.exit_curriculum, n_layers, step, o.steps);
  s.scales = early_exit_scales(s.exit_layers, n_layers, o.e_scale);
  s.exit_distill = o.exit_distill;
  return s;
}

TrainSummary run_training(TrainModel& model, Dataset& data, const Tokenizer& tokenizer,
                          const TrainOptions& o, ThreadPool& pool, EpisodeSet* episodes) {
  const int B = model.batch(), T = model.seq_len(), L = model.config().n_layers;
  const bool relu = model.config().ffn_activation == FfnActivation::kRelu;
  if (o.activation_l1 < 0) fail("train: --activation-l1 must not be negative");
  if (o.activation_l1 > 0 && !relu)
    fail("train: --activation-l1 needs a ReLU-gated model (--activation relu); this one's FFN activation "
         "is {}", ffn_activation_name(model.config().ffn_activation));
  if (o.accum < 1) fail("train: --accum must be at least 1");
  if (o.steps < 1) fail("train: --steps must be at least 1");
  if (o.layer_dropout < 0 || o.layer_dropout > 1) fail("train: --layer-dropout must be in [0, 1]");
  if (!(o.exit_distill >= 0)) fail("train: --exit-distill must not be negative");
  if (o.exit_distill > 0 && !o.early_exit) fail("--exit-distill needs --early-exit-loss");
  // What a resumed run must share with the first one for "continues exactly" to hold. The
  // step count and learning rates may change (that changes the schedule, knowingly).
  std::string settings = fmt::format(
      "batch {} seq {} accum {} params {} train {} val {} dropout {} {} exit {} {} {}", B, T, o.accum,
      model.params().size(), data.train_tokens(), data.val_tokens(), o.layer_dropout,
      static_cast<int>(o.dropout_curriculum), o.early_exit, o.e_scale, o.exit_curriculum.to_string());
  // The FFN activation is part of the model a resumed run rebuilds from its flags (the state
  // holds only numbers); appended only when not the default, so SiLU runs' states written
  // before --activation existed still resume.
  if (relu || o.activation_l1 > 0) settings += fmt::format(" activation relu l1 {}", o.activation_l1);
  // Likewise only when on: states written before --exit-distill existed still resume.
  if (o.exit_distill > 0) settings += fmt::format(" distill {}", o.exit_distill);
  if (episodes) {
    if (!(o.episode_mix >= 0 && o.episode_mix <= 1)) fail("train: --episode-mix must be in [0, 1]");
    if (episodes->seq_len() != T) fail("train: episodes packed for {} rows, the model trains {}", episodes->seq_len(), T);
    // The episode windows drawn follow from the step (see run_training's comment): a resumed
    // run needs the same episodes and mix, not a saved position.
    settings += fmt::format(" episodes {} {} {} mix {}", episodes->episodes(), episodes->tokens(),
                            episodes->windows(), o.episode_mix);
  }
  const uint64_t fingerprint = fnv1a(settings.data(), settings.size());
  AdamW adam(model.params().size());
  DataPosition pos;
  int64_t start = 0;
  const std::string stem = o.out.empty() ? "" : checkpoint_stem(o.out);
  if (o.resume) {
    if (o.out.empty()) fail("train: --resume needs -o CHECKPOINT");
    if (!std::filesystem::exists(state_path(o.out)))
      fail("--resume: {} does not exist (the run stopped before its first complete checkpoint); "
           "start again without --resume", state_path(o.out));
    TrainState s = load_state(state_path(o.out));
    if (s.params.size() != model.params().size())
      fail("{}: holds {} parameters, the model has {}", state_path(o.out), s.params.size(), model.params().size());
    if (s.seed != o.seed) fail("{}: was written with --seed {}, not {}", state_path(o.out), s.seed, o.seed);
    if (s.fingerprint != fingerprint)
      fail("{}: was written by a run with other settings (batch, sequence length, accumulation, data, "
           "model, --activation, --activation-l1, --episodes, --episode-mix or LayerSkip flags incl. "
           "--exit-distill); resume "
           "with the first run's flags",
           state_path(o.out));
    model.params() = s.params;
    adam.m() = s.m;
    adam.v() = s.v;
    adam.set_t(s.adam_t);
    pos = s.position;
    start = s.step;
    if (start >= o.steps) fail("train: the checkpoint is at step {}, not before --steps {}", start, o.steps);
  }
  if (!stem.empty()) {
    // Temp files a killed run left behind (write_file_atomically names them <file>.tmp<pid>).
    namespace fs = std::filesystem;
    fs::path dir = fs::path(stem).parent_path();
    const std::string base = fs::path(stem).filename().string();
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir.empty() ? fs::path(".") : dir, ec)) {
      const std::string n = e.path().filename().string();
      for (const char* ext : {".gguf.tmp", ".state.tmp", ".svg.tmp"})
        if (n.rfind(base + ext, 0) == 0) fs::remove(e.path(), ec);
    }
  }
  std::ofstream log, eval_log;
  std::vector<EvalPoint> history;
  if (!stem.empty()) {
    const bool append = o.resume && std::filesystem::exists(stem + ".log.csv");
    log.open(stem + ".log.csv", append ? std::ios::app : std::ios::trunc);
    if (!append) log << "step,loss,final_layer_loss,lr,grad_norm,tokens_per_s,elapsed_s,sparsity_loss,sparsity,distill_loss\n";
    const bool eval_append = o.resume && std::filesystem::exists(stem + ".eval.csv");
    if (eval_append) history = read_eval_csv(stem + ".eval.csv", L, start);
    eval_log.open(stem + ".eval.csv", eval_append ? std::ios::app : std::ios::trunc);
    if (!eval_append) eval_log << "step,exit_layer,val_loss,top1_agree\n";
    if (!log || !eval_log) fail("cannot write the logs beside {}", o.out);
  }
  if (!o.debug_dump.empty()) std::filesystem::create_directories(o.debug_dump);

  int64_t last_saved = o.resume ? start : -1;
  auto save = [&](int64_t step) {
    if (o.out.empty()) return;
    save_checkpoint(o.out, model, adam, step, pos, o.seed, fingerprint, tokenizer, o.name, [&] {
      if (step == o.debug_kill_mid_save) std::raise(SIGKILL);
    });
    last_saved = step;
  };
  auto run_eval = [&](int64_t step) {
    EvalResult r = evaluate(model, data, o.eval_batches);
    EvalPoint p{step, r.loss, r.agree};
    history.push_back(p);
    if (!stem.empty()) {
      for (int l = 0; l < L; ++l)
        eval_log << fmt::format("{},{},{:.6f},{:.6f}\n", step, l + 1, r.loss[static_cast<size_t>(l)],
                                r.agree[static_cast<size_t>(l)]);
      eval_log.flush();
      std::string svg = render_eval_svg(history, o.name);
      write_bytes(stem + ".svg", svg.data(), svg.size());
    }
    if (o.progress) {
      std::string line = fmt::format("eval step {}:", step);
      for (int l = 0; l < L; ++l)
        line += fmt::format(" L{} {:.3f}/{:.0f}%", l + 1, r.loss[static_cast<size_t>(l)],
                            100 * r.agree[static_cast<size_t>(l)]);
      std::fprintf(stderr, "\n%s\n", line.c_str());
    }
    return r;
  };

  std::vector<int32_t> tokens(static_cast<size_t>(B) * (T + 1));
  std::vector<uint8_t> skip(static_cast<size_t>(B) * L, 0);
  // Episode windows fill the first samples of a micro-batch; text rows: causal, every target.
  std::vector<int32_t> first_visible(static_cast<size_t>(B) * T, 0);
  std::vector<uint8_t> loss_mask(static_cast<size_t>(B) * T, 1);
  TrainSummary summary;
  summary.first_step = start;
  if (o.eval_every > 0 && start == 0) summary.initial_eval = run_eval(0);
  const auto t0 = Clock::now();
  int64_t tokens_done = 0;
  for (int64_t step = start; step < o.steps; ++step) {
    const double lr = learning_rate(o.opt, step);
    const double time_scale = dropout_time_scale(o.dropout_curriculum, step, o.steps);
    const LossSpec spec = loss_spec(o, L, step);
    model.zero_grads();
    double loss = 0.0, final_loss = 0.0, l1_loss = 0.0, sparsity = 0.0, distill_loss = 0.0;
    for (int micro = 0; micro < o.accum; ++micro) {
      const int64_t micro_index = step * o.accum + micro;
      const int n_episode = episodes ? episode_samples(micro_index, B, o.episode_mix) : 0;
      data.next_train_batch(pos, B - n_episode, tokens.data() + static_cast<size_t>(n_episode) * (T + 1));
      if (episodes) {
        std::fill(first_visible.begin(), first_visible.end(), 0);
        std::fill(loss_mask.begin(), loss_mask.end(), 1);
        const int64_t g = episode_windows_before(micro_index, B, o.episode_mix);
        for (int j = 0; j < n_episode; ++j)
          episodes->train_window(g + j, tokens.data() + static_cast<size_t>(j) * (T + 1),
                                 first_visible.data() + static_cast<size_t>(j) * T,
                                 loss_mask.data() + static_cast<size_t>(j) * T);
      }
      const bool dropout = o.layer_dropout > 0;
      if (dropout) sample_layer_dropout(skip.data(), B, L, o.layer_dropout, time_scale, o.seed, step, micro);
      if (!o.debug_dump.empty()) {
        std::string base = fmt::format("{}/step{}_{}", o.debug_dump, step, micro);
        write_bytes(base + ".tokens", tokens.data(), tokens.size() * sizeof(int32_t));
        write_bytes(base + ".skip", skip.data(), skip.size());
        if (episodes) {
          write_bytes(base + ".fv", first_visible.data(), first_visible.size() * sizeof(int32_t));
          write_bytes(base + ".mask", loss_mask.data(), loss_mask.size());
        }
      }
      // A micro-batch without episode windows takes the plain causal path.
      const bool blocks = n_episode > 0;
      model.forward(tokens.data(), dropout ? skip.data() : nullptr, blocks ? first_visible.data() : nullptr,
                    blocks ? loss_mask.data() : nullptr);
      StepResult r = model.backward(spec, 1.0f / static_cast<float>(o.accum));
      loss += r.loss / o.accum;
      final_loss += r.exit_loss.back() / o.accum;
      l1_loss += r.sparsity_loss / o.accum;
      sparsity += r.sparsity / o.accum;
      distill_loss += r.distill_loss / o.accum;
    }
    if (step == o.debug_nan_step) model.grads()[model.grads().size() / 2] = NAN;
    const double norm = global_norm(model.grads());
    if (!std::isfinite(loss) || !std::isfinite(norm)) {
      if (o.progress) std::fprintf(stderr, "\n");
      fail("step {}: {} is {}; training stopped{}", step + 1, std::isfinite(loss) ? "gradient norm" : "loss",
           std::isfinite(loss) ? norm : loss,
           last_saved >= 0 ? fmt::format(", last good checkpoint {} (step {}) left intact", o.out, last_saved)
                           : std::string(", no checkpoint written yet"));
    }
    adam.step(model.params(), model.grads(), model.layout(), o.opt, lr, clip_factor(norm, o.opt.clip), pool);
    summary.losses.push_back(loss);
    const int64_t done = step + 1;
    tokens_done += static_cast<int64_t>(B) * T * o.accum;
    const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    const double tps = elapsed > 0 ? static_cast<double>(tokens_done) / elapsed : 0.0;
    summary.tokens_per_second = tps;
    const double eta = elapsed / static_cast<double>(done - start) * static_cast<double>(o.steps - done);
    if (log.is_open())
      log << fmt::format("{},{:.6f},{:.6f},{:.6g},{:.6g},{:.1f},{:.3f},{:.6g},{:.6f},{:.6g}\n", done, loss, final_loss,
                         lr, norm, tps, elapsed, l1_loss, sparsity, distill_loss);
    if (o.progress) {
      // ReLU-fication: the fraction of zero FFN activations is what to watch (and the penalty);
      // self-distillation: its term.
      std::string extras;
      if (relu) extras = fmt::format(" | sparsity {:.1f}%", 100 * sparsity);
      if (o.activation_l1 > 0) extras += fmt::format(" | l1 {:.4f}", l1_loss);
      if (o.exit_distill > 0) extras += fmt::format(" | distill {:.4f}", distill_loss);
      std::fprintf(stderr, "\rstep %lld/%lld | loss %.4f | final %.4f%s | lr %.2e | %.0f tok/s | ETA %s   ",
                   static_cast<long long>(done), static_cast<long long>(o.steps), loss, final_loss,
                   extras.c_str(), lr, tps, duration_string(eta).c_str());
    }
    const bool last = done == o.steps;
    if ((o.eval_every > 0 && done % o.eval_every == 0) || last) {
      EvalResult r = run_eval(done);
      if (last) summary.final_eval = r;
    }
    if ((o.save_every > 0 && done % o.save_every == 0) || last) save(done);
    if (log.is_open()) log.flush();
    summary.last_step = done;
    if (done == o.stop_after) break;
  }
  if (o.progress) std::fprintf(stderr, "\n");
  return summary;
}

}  // namespace skiff::train

// skiff train: LayerSkip training on the CPU (layer dropout, early-exit loss), from scratch
// (shape flags) or continual from a GGUF / llama2.c model. skiff train-check (hidden): one
// forward/backward on given tokens and masks, writing loss, gradients and logits for the
// PyTorch reference tests. --activation relu trains a ReLU-gated FFN; on a SiLU model loaded
// with -m that is ReLU-fication ("ReLU strikes back", LLM in a Flash): the weights are kept,
// only the gate's nonlinearity changes, and --activation-l1 pushes activations to zero.
// --episodes mixes memory-augmented QA episodes (block attention, train/episodes.h) into the
// batches; train-check takes their masks as --first-visible and --loss-mask. --exit-distill W
// adds self-distillation of the early exits toward the final layer (LossSpec::exit_distill).
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "base/error.h"
#include "base/mapped_file.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "train/trainer.h"

namespace skiff::cli {

namespace {

std::vector<uint8_t> read_binary(const std::string& path) {
  std::string s = read_text_file(path);
  return std::vector<uint8_t>(s.begin(), s.end());
}

void write_floats(const std::string& path, const float* p, size_t n) {
  write_file_atomically(path, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(p), n * sizeof(float)));
}

// The vocabulary for a model trained from scratch: a GGUF file's, or a llama2.c
// tokenizer.bin with `vocab_size` tokens; empty: the built-in model's.
std::unique_ptr<Tokenizer> vocabulary_for(const std::string& path, int vocab_size) {
  if (path.empty() || is_gguf_file(path)) {
    ModelFlags f;
    f.model = path;
    std::unique_ptr<Model> m = open_model(f);
    return std::make_unique<Tokenizer>(m->tokenizer->vocab());
  }
  if (vocab_size <= 0) fail("--vocab-from {}: a tokenizer.bin needs --vocab-size", path);
  return std::make_unique<Tokenizer>(vocab_from_llama2c(path, vocab_size));
}

// --activation (empty: keep `current`).
FfnActivation activation_from_flag(const std::string& flag, FfnActivation current) {
  if (flag.empty()) return current;
  std::optional<FfnActivation> a = parse_ffn_activation(flag);
  if (!a) fail("--activation {}: expected silu or relu", flag);
  return *a;
}

// --resume rebuilds the model from the flags; the checkpoint GGUF says which FFN activation the
// first run trained, and a different one would continue a different model.
void check_resumed_activation(const std::string& ckpt, FfnActivation flags_activation) {
  if (!std::filesystem::exists(ckpt)) return;  // killed before the first GGUF: the state decides
  ModelFlags f;
  f.model = ckpt;
  const FfnActivation saved = open_model(f)->config.ffn_activation;
  if (saved != flags_activation)
    fail("--resume: {} is a {}-gated model but the flags give {}; resume with --activation {}", ckpt,
         ffn_activation_name(saved), ffn_activation_name(flags_activation), ffn_activation_name(saved));
}

// --exit-distill W: W >= 0, and only on top of the early-exit loss (its exit heads).
void check_exit_distill(double w, bool early_exit) {
  if (!(w >= 0)) fail("--exit-distill {}: the weight must not be negative", w);
  if (w > 0 && !early_exit) fail("--exit-distill needs --early-exit-loss");
}

}  // namespace

void register_train(CLI::App& app) {
  struct Flags {
    ModelFlags model;
    // from scratch
    int dim = 0, layers = 0, heads = 0, kv_heads = 0, ffn = 0, context = 0, vocab_size = 0, rope_dim = 0;
    float rope_theta = 10000.0f;
    bool untied = false;
    std::string vocab_from;
    // data
    std::vector<std::string> data;
    std::string val_data;
    std::string episodes;
    double episode_mix = 0.5;
    double val_fraction = 0.05;
    int seq_len = 256;
    std::string dropout_curriculum = "constant", exit_curriculum = "none";
    std::string activation;  // empty: keep the model's (silu from scratch)
    double early_exit = -1;
    train::TrainOptions o;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* cmd = app.add_subcommand("train", "train with LayerSkip (layer dropout, early-exit loss) on the CPU");
  cmd->option_defaults()->always_capture_default();
  add_model_flags(cmd, f->model);
  cmd->add_option("--dim", f->dim, "from scratch: embedding width (default: continue from -m)");
  cmd->add_option("--layers", f->layers, "from scratch: layers");
  cmd->add_option("--heads", f->heads, "from scratch: attention heads");
  cmd->add_option("--kv-heads", f->kv_heads, "from scratch: KV heads (default: --heads)");
  cmd->add_option("--ffn", f->ffn, "from scratch: SwiGLU hidden width (default: 8/3 dim rounded to 32)");
  cmd->add_option("--context", f->context, "context length (from scratch: default --seq-len; with -m: extends the model's)");
  cmd->add_option("--rope-dim", f->rope_dim, "from scratch: rotated dims per head (default: head dim)");
  cmd->add_option("--rope-theta", f->rope_theta, "from scratch: RoPE base");
  cmd->add_flag("--untied", f->untied, "from scratch: a separate output matrix (default: tied to the embeddings)");
  cmd->add_option("--vocab-from", f->vocab_from, "from scratch: take the vocabulary of this GGUF or tokenizer.bin (default: built-in tok512)");
  cmd->add_option("--vocab-size", f->vocab_size, "from scratch: tokens in a tokenizer.bin");
  cmd->add_option("--data", f->data, "training text file(s)")->required()->check(CLI::ExistingFile);
  cmd->add_option("--val-data", f->val_data, "validation text (default: the last --val-fraction of the documents)")->check(CLI::ExistingFile);
  cmd->add_option("--val-fraction", f->val_fraction, "documents held out for validation");
  cmd->add_option("--episodes", f->episodes,
                  "memory-augmented QA episodes, JSONL {\"entries\": [...], \"question\", \"answer\", \"more\"?: "
                  "[{\"question\", \"answer\"}, ...]}: "
                  "trained with block attention (each entry sees only itself; docs/TRAINING.md)")
      ->check(CLI::ExistingFile);
  CLI::Option* episode_mix =
      cmd->add_option("--episode-mix", f->episode_mix,
                      "with --episodes: the fraction of each batch's samples that are episode windows")
          ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--seq-len", f->seq_len, "tokens per sequence")->check(CLI::Range(1, 1 << 16));
  cmd->add_option("-b,--batch", f->o.batch, "sequences per micro-batch")->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--accum", f->o.accum, "micro-batches per optimizer step")->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--steps", f->o.steps, "optimizer steps")->check(CLI::PositiveNumber);
  cmd->add_option("--lr", f->o.opt.lr, "peak learning rate");
  cmd->add_option("--min-lr", f->o.opt.min_lr, "learning rate at the end of the cosine decay");
  cmd->add_option("--warmup", f->o.opt.warmup, "linear warm-up steps")->check(CLI::NonNegativeNumber);
  cmd->add_option("--weight-decay", f->o.opt.weight_decay, "AdamW weight decay (matrices only)");
  cmd->add_option("--beta1", f->o.opt.beta1, "AdamW beta1");
  cmd->add_option("--beta2", f->o.opt.beta2, "AdamW beta2");
  cmd->add_option("--clip", f->o.opt.clip, "clip the global gradient norm to this (0: off)");
  cmd->add_option("--seed", f->o.seed, "seed (initialization, shuffling, layer dropout)");
  cmd->add_option("--layer-dropout", f->o.layer_dropout, "LayerSkip P_MAX: the last layer's dropout rate")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--dropout-curriculum", f->dropout_curriculum, "constant (continual) or exp (from scratch)")
      ->check(CLI::IsMember({"constant", "exp"}));
  cmd->add_option("--early-exit-loss", f->early_exit, "LayerSkip E_SCALE: early-exit loss on, with this scale for non-final layers");
  cmd->add_option("--early-exit-curriculum", f->exit_curriculum, "none, rotational:R or gradual[:F]");
  cmd->add_option("--exit-distill", f->o.exit_distill,
                  "with --early-exit-loss: self-distillation weight W: adds W times the mean over the "
                  "early exits (before the last layer) of KL(final layer || exit), the final layer "
                  "detached, to raise self-speculative acceptance (0: off)");
  cmd->add_option("--activation", f->activation,
                  "FFN gate activation: silu or relu; with -m, relu ReLU-fies the model (weights kept) "
                  "(default: the model's; silu from scratch)")
      ->check(CLI::IsMember({"silu", "relu"}));
  cmd->add_option("--activation-l1", f->o.activation_l1,
                  "ReLU models: L1 penalty LAMBDA on the mean FFN activation per layer, for sparsity")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-o,--output", f->o.out, "checkpoint .gguf (beside it: .state, .log.csv, .eval.csv, .svg)")->required();
  cmd->add_option("--save-every", f->o.save_every, "checkpoint every N steps (and at the end)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--eval-every", f->o.eval_every, "evaluate every N steps (and at the end)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--eval-batches", f->o.eval_batches, "validation batches per evaluation")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--name", f->o.name, "general.name of the checkpoint");
  cmd->add_flag("--resume", f->o.resume, "continue from -o's checkpoint (same flags as the first run)");
  cmd->add_flag("--quiet", [f](int64_t) { f->o.progress = false; }, "no progress line");
  cmd->add_option("--debug-dump", f->o.debug_dump, "test hook: write each step's tokens and masks here")->group("");
  cmd->add_option("--debug-nan-step", f->o.debug_nan_step, "test hook: poison the gradients at this step")->group("");
  cmd->add_option("--debug-kill-mid-save", f->o.debug_kill_mid_save,
                  "test hook: SIGKILL between the model and the state of the checkpoint after this step")
      ->group("");
  cmd->callback([f, episode_mix] {
    train::TrainOptions& o = f->o;
    o.dropout_curriculum = f->dropout_curriculum == "exp" ? train::DropoutCurriculum::Exp
                                                          : train::DropoutCurriculum::Constant;
    o.early_exit = f->early_exit >= 0;
    if (o.early_exit) o.e_scale = f->early_exit;
    o.exit_curriculum = train::ExitCurriculum::parse(f->exit_curriculum);
    if (!o.early_exit && o.exit_curriculum.kind != train::ExitCurriculum::Kind::None)
      fail("--early-exit-curriculum needs --early-exit-loss");
    check_exit_distill(o.exit_distill, o.early_exit);
    if (o.opt.min_lr > o.opt.lr) fail("--min-lr must not exceed --lr");
    if (o.opt.warmup >= o.steps && o.opt.warmup > 0) fail("--warmup must be less than --steps");
    o.opt.total_steps = o.steps;

    std::unique_ptr<Tokenizer> tokenizer;
    std::unique_ptr<Model> source;
    ModelConfig config;
    bool tied = true;
    if (f->dim > 0) {
      if (!f->model.model.empty()) fail("give -m (continual training) or --dim (from scratch), not both");
      if (f->layers <= 0 || f->heads <= 0) fail("from scratch needs --dim, --layers and --heads");
      tokenizer = vocabulary_for(f->vocab_from, f->vocab_size);
      config.name = o.name;
      config.dim = f->dim;
      config.n_layers = f->layers;
      config.n_heads = f->heads;
      config.n_kv_heads = f->kv_heads > 0 ? f->kv_heads : f->heads;
      config.head_dim = f->heads > 0 ? f->dim / f->heads : 0;
      config.ffn_dim = f->ffn > 0 ? f->ffn : (8 * f->dim / 3 + 31) / 32 * 32;
      config.vocab_size = tokenizer->vocab().size();
      config.context_length = f->context > 0 ? f->context : f->seq_len;
      config.rope_dim = f->rope_dim > 0 ? f->rope_dim : config.head_dim;
      config.rope_theta = f->rope_theta;
      config.validate("train");
      tied = !f->untied;
    } else {
      source = open_model(f->model);
      config = source->config;
      tied = source->tied_output;
      // A longer context than the model was trained for (RoPE positions are not parameters):
      // continual training then teaches it to use them.
      if (f->context > 0) {
        if (f->context < config.context_length)
          fail("--context {} is shorter than the model's {}", f->context, config.context_length);
        config.context_length = f->context;
      }
      tokenizer = std::make_unique<Tokenizer>(source->tokenizer->vocab());
    }
    config.ffn_activation = activation_from_flag(f->activation, config.ffn_activation);
    if (o.activation_l1 > 0 && config.ffn_activation != FfnActivation::kRelu)
      fail("--activation-l1 needs a ReLU-gated model: add --activation relu (the model's FFN activation "
           "is {})", ffn_activation_name(config.ffn_activation));
    if (o.resume) check_resumed_activation(o.out, config.ffn_activation);
    ThreadPool pool(f->model.threads);
    train::TrainModel model(config, tied, o.batch, f->seq_len, pool);
    if (source)
      model.init_from(*source);
    else
      model.init_random(o.seed);
    source.reset();

    train::DataConfig dc;
    dc.train_files = f->data;
    dc.val_file = f->val_data;
    dc.val_fraction = f->val_fraction;
    dc.seq_len = f->seq_len;
    dc.seed = o.seed;
    train::Dataset data(*tokenizer, dc, pool);
    std::unique_ptr<train::EpisodeSet> episodes;
    if (episode_mix->count() > 0 && f->episodes.empty()) fail("--episode-mix needs --episodes");
    if (!f->episodes.empty()) {
      o.episode_mix = f->episode_mix;
      episodes = std::make_unique<train::EpisodeSet>(*tokenizer, f->episodes, f->seq_len, o.seed, pool);
      if (o.progress)
        std::fprintf(stderr, "train: %lld episodes (%lld tokens) packed into %lld windows of %d; %.0f%% of the samples\n",
                     static_cast<long long>(episodes->episodes()), static_cast<long long>(episodes->tokens()),
                     static_cast<long long>(episodes->windows()), f->seq_len, 100 * o.episode_mix);
    }
    if (o.progress)
      std::fprintf(stderr,
                   "train: %lld parameters (dim %d, %d layers, %d/%d heads, ffn %d %s, vocab %d, %s head); "
                   "%lld documents, %zu train / %zu validation tokens; %d x %d tokens x %d per step, %d threads\n",
                   static_cast<long long>(model.params().size()), config.dim, config.n_layers, config.n_heads,
                   config.n_kv_heads, config.ffn_dim, ffn_activation_name(config.ffn_activation), config.vocab_size, tied ? "tied" : "untied",
                   static_cast<long long>(data.documents()), data.train_tokens(), data.val_tokens(), o.batch,
                   f->seq_len, o.accum, pool.size());
    train::TrainSummary s = train::run_training(model, data, *tokenizer, o, pool, episodes.get());
    std::printf("trained steps %lld..%lld: loss %.4f, %.0f tokens/s\n", static_cast<long long>(s.first_step),
                static_cast<long long>(s.last_step), s.losses.empty() ? 0.0 : s.losses.back(), s.tokens_per_second);
    const bool before = !s.initial_eval.loss.empty();
    std::printf(before ? "exit_layer,val_loss_before,top1_agree_before,val_loss,top1_agree\n"
                       : "exit_layer,val_loss,top1_agree\n");
    for (size_t l = 0; l < s.final_eval.loss.size(); ++l) {
      if (before) std::printf("%zu,%.4f,%.4f,", l + 1, s.initial_eval.loss[l], s.initial_eval.agree[l]);
      else std::printf("%zu,", l + 1);
      std::printf("%.4f,%.4f\n", s.final_eval.loss[l], s.final_eval.agree[l]);
    }
  });

  // ---- train-check: one step's numbers for the reference tests --------------------------
  struct Check {
    ModelFlags model;
    std::string tokens, skip, first_visible, loss_mask, out, curriculum = "none", state, eval_data;
    int batch = 1, seq_len = 0;
    double early_exit = -1, activation_l1 = 0, exit_distill = 0;
    int64_t step = 0, steps = 1;
  };
  auto c = std::make_shared<Check>();
  CLI::App* check = app.add_subcommand("train-check", "test hook: one forward/backward, written to files");
  check->group("");
  add_model_flags(check, c->model);
  check->add_option("--tokens", c->tokens, "int32 tokens [batch][seq-len+1]");
  check->add_option("--skip", c->skip, "uint8 layer-skip mask [batch][layers] (default: none)");
  check->add_option("--first-visible", c->first_visible,
                    "int32 [batch][seq-len]: the first row each row attends to (block attention; "
                    "default: causal)");
  check->add_option("--loss-mask", c->loss_mask,
                    "uint8 [batch][seq-len]: 0 drops that row's target from the loss (default: all count)");
  check->add_option("-b,--batch", c->batch, "sequences");
  check->add_option("--seq-len", c->seq_len, "tokens per sequence");
  check->add_option("--early-exit-loss", c->early_exit, "E_SCALE (default: final-layer loss only)");
  check->add_option("--early-exit-curriculum", c->curriculum, "none, rotational:R or gradual[:F]");
  check->add_option("--activation-l1", c->activation_l1, "activation L1 penalty (ReLU models)");
  check->add_option("--exit-distill", c->exit_distill, "exit self-distillation weight (needs --early-exit-loss)");
  check->add_option("--step", c->step, "step for the curriculum");
  check->add_option("--steps", c->steps, "total steps for the curriculum");
  check->add_option("-o,--output", c->out, "folder for loss.txt, grads.f32, logits.f32");
  check->add_option("--state", c->state, "instead: load this training state and print its step");
  check->callback([c] {
    if (!c->state.empty()) {
      train::TrainState s = train::load_state(c->state);
      std::printf("step %lld params %zu\n", static_cast<long long>(s.step), s.params.size());
      return;
    }
    if (c->tokens.empty() || c->out.empty() || c->seq_len <= 0) fail("train-check needs --tokens, --seq-len and -o");
    std::unique_ptr<Model> m = open_model(c->model);
    const int L = m->config.n_layers;
    ThreadPool pool(c->model.threads);
    train::TrainModel model(m->config, m->tied_output, c->batch, c->seq_len, pool);
    model.init_from(*m);
    std::vector<uint8_t> tok_bytes = read_binary(c->tokens);
    const size_t want = static_cast<size_t>(c->batch) * (c->seq_len + 1) * sizeof(int32_t);
    if (tok_bytes.size() != want) fail("{}: {} bytes, expected {}", c->tokens, tok_bytes.size(), want);
    std::vector<int32_t> tokens(want / sizeof(int32_t));
    std::memcpy(tokens.data(), tok_bytes.data(), want);
    std::vector<uint8_t> skip;
    if (!c->skip.empty()) {
      skip = read_binary(c->skip);
      if (skip.size() != static_cast<size_t>(c->batch) * L) fail("{}: expected {} bytes", c->skip, c->batch * L);
    }
    const size_t rows = static_cast<size_t>(c->batch) * static_cast<size_t>(c->seq_len);
    std::vector<int32_t> first_visible;
    if (!c->first_visible.empty()) {
      std::vector<uint8_t> bytes = read_binary(c->first_visible);
      if (bytes.size() != rows * sizeof(int32_t))
        fail("{}: {} bytes, expected {} (int32 [batch][seq-len])", c->first_visible, bytes.size(),
             rows * sizeof(int32_t));
      first_visible.resize(rows);
      std::memcpy(first_visible.data(), bytes.data(), bytes.size());
    }
    std::vector<uint8_t> loss_mask;
    if (!c->loss_mask.empty()) {
      loss_mask = read_binary(c->loss_mask);
      if (loss_mask.size() != rows) fail("{}: {} bytes, expected {}", c->loss_mask, loss_mask.size(), rows);
    }
    train::TrainOptions o;
    o.early_exit = c->early_exit >= 0;
    o.e_scale = c->early_exit;
    o.exit_curriculum = train::ExitCurriculum::parse(c->curriculum);
    o.steps = c->steps;
    o.activation_l1 = c->activation_l1;
    check_exit_distill(c->exit_distill, o.early_exit);
    o.exit_distill = c->exit_distill;
    train::LossSpec spec = train::loss_spec(o, L, c->step);
    model.zero_grads();
    model.forward(tokens.data(), skip.empty() ? nullptr : skip.data(),
                  first_visible.empty() ? nullptr : first_visible.data(),
                  loss_mask.empty() ? nullptr : loss_mask.data());
    train::StepResult r = model.backward(spec, 1.0f);
    std::filesystem::create_directories(c->out);
    std::string text = fmt::format("loss {:.9g}\nsparsity_loss {:.9g}\nsparsity {:.9g}\ndistill_loss {:.9g}\n",
                                   r.loss, r.sparsity_loss, r.sparsity, r.distill_loss);
    // exit LAYER SCALE CE KL (KL: the mean KL(final || exit) of self-distillation, 0 when off)
    for (size_t i = 0; i < spec.exit_layers.size(); ++i)
      text += fmt::format("exit {} {:.9g} {:.9g} {:.9g}\n", spec.exit_layers[i], spec.scales[i], r.exit_loss[i],
                          r.exit_kl[i]);
    write_file_atomically(c->out + "/loss.txt", std::span<const uint8_t>(
        reinterpret_cast<const uint8_t*>(text.data()), text.size()));
    write_floats(c->out + "/grads.f32", model.grads().data(), model.grads().size());
    // Final-layer logits of the same forward (no skip unless --skip was given).
    const int64_t N = static_cast<int64_t>(c->batch) * c->seq_len;
    std::vector<float> logits(static_cast<size_t>(N * m->config.vocab_size));
    model.exit_logits(L - 1, logits.data(), nullptr, nullptr);
    write_floats(c->out + "/logits.f32", logits.data(), logits.size());
  });
}

}  // namespace skiff::cli

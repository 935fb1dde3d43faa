// Checkpoints: `<stem>.gguf` holds the weights as an F32 GGUF the engine loads directly;
// `<stem>.state` (the sidecar) holds everything a resumed run needs: step, data position,
// seed, the AdamW moments AND a copy of the weights, so it is self-sufficient and never
// out of step with another file. Both are written atomically (temp file, fsync, rename), the
// sidecar first; a kill at any moment leaves the previous or the new version of each, each
// whole. The sidecar ends with an FNV-1a checksum of everything before it.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"
#include "train/data.h"
#include "train/optimizer.h"
#include "train/train_model.h"

namespace skiff::train {

struct TrainState {
  int64_t step = 0;  // optimizer steps done
  DataPosition position;
  uint64_t seed = 0;
  int64_t adam_t = 0;
  uint64_t fingerprint = 0;  // of the settings a resumed run must share (see trainer.cpp)
  std::vector<float> params, m, v;
};

// "ckpt.gguf" -> "ckpt"; other names are kept whole.
std::string checkpoint_stem(const std::string& path);
std::string state_path(const std::string& gguf_path);

void save_state(const std::string& path, const TrainState& state);
// Throws Error naming the file when it is truncated, corrupt or of another version.
TrainState load_state(const std::string& path);

// Writes the GGUF, then <stem>.state, each atomically. The state comes second so that a run
// killed between the two leaves a state that is never newer than its model (on the first save:
// a model and no state, which resume treats as no checkpoint); --resume reads only the state.
// `between` (a test hook) runs after the model is in place and before the state is written.
void save_checkpoint(const std::string& gguf_path, const TrainModel& model, const AdamW& adam,
                     int64_t step, const DataPosition& pos, uint64_t seed, uint64_t fingerprint,
                     const Tokenizer& tokenizer, const std::string& name,
                     const std::function<void()>& between = {});

// FNV-1a 64 of bytes (the sidecar's checksum; also used for fingerprints).
uint64_t fnv1a(const void* data, size_t n);

}  // namespace skiff::train

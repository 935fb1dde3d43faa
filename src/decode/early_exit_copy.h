// Quantized copies for drafting. Self-speculation's drafts only propose (verification decides
// with the model's own weights), so they can read smaller copies of what they run:
//   - make_draft_head: a Q8_0/Q4_0 copy of the output matrix for the early head alone; the
//     drafts still write the early layers' keys and values into the target's one KV cache;
//   - make_early_exit_copy: layers 0..E-1, the final norm and the head as a model of their
//     own with Q8_0/Q4_0 matrices, which drafts in a KV cache of its own (ModelDrafter).
//     A draft step then reads about half the bytes on an F16/BF16 model, but the early
//     layers' cache entries come from the copy, so verification runs every layer again
//     (D+1 positions in one batch, which costs about one decode step where decoding is
//     memory-bound). It pays where a round's drafts outweigh its verification.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/thread_pool.h"
#include "kernels/repack.h"
#include "model/model.h"

namespace skiff {

// A matrix's rows in another type, packed for the AVX-512 kernels when that helps.
struct QuantizedMatrix {
  TensorView view;  // reads `bytes` (and `packed`)
  std::vector<uint8_t> bytes;
  PackedBytes packed;
};

// w's rows quantized to `type` (Q8_0 or Q4_0; w's columns whole blocks of 32, else Error
// naming `what`, e.g. "--draft-head q8_0"), on `pool`'s threads when given.
std::shared_ptr<const QuantizedMatrix> quantize_matrix(const TensorView& w, DType type, const std::string& what,
                                                       ThreadPool* pool = nullptr);

// The copy of the head for self-speculation's early head (`--draft-head TYPE`).
using DraftHead = QuantizedMatrix;
std::shared_ptr<const DraftHead> make_draft_head(const Model& model, DType type);

// Layers 0..exit_layer-1 of `model` with its final norm, head, embeddings and tokenizer as a
// model that drafts for it (`--self-spec E --draft-copy TYPE`): every matrix that is larger
// than its `type` copy and whose rows are whole blocks of 32 is quantized, the rest (norms,
// embeddings, other matrices) are views into `model`, which must outlive the copy. Error when
// exit_layer is not in 1..L-1 or `type` is not Q8_0 / Q4_0.
std::unique_ptr<Model> make_early_exit_copy(const Model& model, int exit_layer, DType type);

}  // namespace skiff

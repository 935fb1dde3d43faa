// The pipeline's messages as bytes (docs/DISTRIBUTED.md): what stage 0 and the later stages
// send each other, and the parsers that check what arrives. Every rank runs the same build
// on the same architecture, so plain structs go as their bytes; a parser still checks every
// count and size against the message and the plan, so a malformed message is an Error naming
// what is wrong, never a read past the end (fuzz/fuzz_pipeline_wire.cpp).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "dist/stage_plan.h"

namespace skiff::dist {

// A batch: hidden states for T positions of n_seqs sequences entering layer `first`, to run
// through layers [first, last); each sequence's rows start at its `pos`.
struct BatchHeader {
  int64_t ticket;
  int32_t n_seqs, T, first, last;
};
struct SeqRows {
  int32_t seq, pos, rows;
};

struct Batch {
  BatchHeader header{};
  std::vector<SeqRows> seqs;
  size_t payload_offset = 0;  // where hidden[T][dim] (F32) starts in the message
};

// BatchHeader, SeqRows[n_seqs], hidden[T][dim].
std::vector<uint8_t> encode_batch(const BatchHeader& header, std::span<const SeqRows> seqs, const float* hidden,
                                  int dim);
// Checks a batch message for a model of `dim` and `n_layers` decoding at most `sequences`
// sequences in contexts of `context_length` positions: 1..sequences distinct sequences, rows
// >= 1 adding up to T, 0 <= pos and pos + rows <= context_length, 0 <= first < last <=
// n_layers, and the size. Error otherwise.
Batch parse_batch(std::span<const uint8_t> bytes, int dim, int n_layers, int sequences, int context_length);

// Sequence `to` takes the first n positions of sequence `from`'s cache.
struct CopyPrefix {
  int32_t from, to, n;
};
CopyPrefix parse_copy(std::span<const uint8_t> bytes, int sequences, int context_length);

// The plan stage 0 sends: context length, sequences and every stage's layers.
struct PlanMessage {
  int32_t context_length = 0, sequences = 0;
  StagePlan plan;
};
std::vector<uint8_t> encode_plan(const PlanMessage& plan);
// Checks it against `stages` ranks and a model of n_layers (validate_stage_plan's rules).
PlanMessage parse_plan(std::span<const uint8_t> bytes, int stages, int n_layers);

}  // namespace skiff::dist

// Encoding knowledge entries and questions with the model: an entry's keys and values for
// every layer (as the memory store keeps them) and the retrieval vectors both sides are
// compared with.
//
// Retrieval vector: the mean over the tokens of the final layer's hidden states, each
// RMS-normalized first, then scaled to unit length (the cosine of two vectors is their dot
// product). A decoder's own states are a weak retriever; docs/MEMORY.md reports its recall.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/forward.h"

namespace skiff::memory {

struct EncodedEntry {
  std::vector<float> keys, values;  // [n_layers][n_tokens][kv_dim]; keys rotated at positions 0..n-1
  std::vector<float> vector;        // [dim], unit length
};

// Runs the tokens alone (positions 0..n-1, nothing before them: block attention) in `ctx`,
// which is cleared first and must have an F32 cache of at least n positions.
EncodedEntry encode_entry(Context& ctx, std::span<const int32_t> tokens);

// The retrieval vector of n final hidden states hidden[n][dim]: RMS-normalized rows, their
// mean, unit length.
std::vector<float> pool_hidden_states(std::span<const float> hidden, size_t n, int dim);

// The retrieval vector of a text on its own (a question): the same pooling as entries.
std::vector<float> retrieval_vector(Context& ctx, std::span<const int32_t> tokens);

}  // namespace skiff::memory

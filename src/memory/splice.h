// Splicing stored entries into a sequence's KV cache: the step that replaces prefilling
// their text. Entries land at consecutive positions after what the cache holds; each key,
// stored as rotated at positions 0..n-1, is rotated on by the entry's start position p, so
// it becomes the key of position p + j (RoPE angles are linear in the position; the
// magnitude scale of YaRN is already in the stored key and is not applied twice). What
// follows then reads the cache as if a block-masked prefill had written it. An entry of a
// compressed store (memory/compress.h) takes only its kept rows, as a shorter entry would.
#pragma once

#include <cstddef>
#include <span>

#include "memory/store.h"
#include "model/forward.h"

namespace skiff::memory {

// Appends the entries, in order, to every layer of ctx's cache (all layers at the same
// length, stored here). correct_positions = false keeps the keys' stored rotation: the
// negative control (splice-uncorrected), whose output must NOT match. Checks each entry's
// checksum once. Throws Error when the store does not fit the model or the context.
void splice(Context& ctx, const MemoryStore& store, std::span<const size_t> entries, bool correct_positions = true);

// Appends the first `rows` rows of one entry, as splice() would with the entry cut there
// (splice-recompute then prefills the entry's remaining tokens itself). Same checks.
void splice_prefix(Context& ctx, const MemoryStore& store, size_t entry, int rows);

// How many last tokens of `entry` splice-recompute prefills: min(recompute, its tokens).
// Throws Error for an entry of a compressed store, whose rows are not its tokens.
int recomputed_rows(const MemoryStore& store, size_t entry, int recompute);

// splice-recompute for one sequence: per entry, in order, splice_prefix of all its rows but
// the last recomputed_rows, then those tokens prefilled, seeing everything before them.
// Returns the rows prefilled.
int splice_recomputing(Context& ctx, const MemoryStore& store, std::span<const size_t> entries, int recompute);

}  // namespace skiff::memory

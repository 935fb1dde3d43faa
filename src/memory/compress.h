// Compressed memories: an entry's KV cut to a fixed number of slots (MATTER keeps every
// knowledge entry as a fixed-length neural memory; this is the selection route to the same
// budget, in the manner of SnapKV / H2O: keep the keys and values attention uses most).
//
// Per layer and KV head, an entry keeps the `slots` positions a question is likely to attend
// to. The question is not known when the store is built, so a PROBE stands in for it (the
// observation window of SnapKV): a text run right after the entry (it sees the entry, the
// entry does not see it), by default the reader's question template with no question,
// "Q: A:". Position t scores the attention the probe's rows pay it, summed over them and
// over the query heads that share the KV head. Without a probe, t scores the attention the
// entry's own later rows pay it, averaged over those rows (H2O-like). docs/MEMORY.md
// compares the two: the probe keeps what the reader's questions read.
//
// The kept positions stay in their order and are packed into rows 0..slots-1; each kept key
// is re-rotated from its position t to its row j (by j - t: RoPE angles are linear in the
// position), so a compressed entry is stored and spliced exactly like an entry of `slots`
// tokens (memory/splice.h). Different heads may keep different positions: each row holds,
// per head, that head's j-th choice.
#pragma once

#include <cstdint>
#include <span>

#include "memory/encode.h"
#include "model/forward.h"

namespace skiff::memory {

// Per layer, per KV head, the kept positions of an entry (ascending), from the attention
// the entry's queries pay them; [n_layers][n_kv_heads][min(slots, n)].
using SlotChoice = std::vector<std::vector<std::vector<int>>>;

// The default probe: the reader's question template (memory/reader.h) with no question.
inline constexpr const char* kDefaultSlotProbe = "Q: A:";

// encode_entry (memory/encode.h) then compression: keys and values [n_layers][r][kv_dim],
// r = min(slots, n); with n <= slots the entry is kept whole. probe: its tokens (empty: the
// entry's own attention scores). ctx needs room for the entry and the probe. `choice`, when
// not null, receives the kept positions (tests).
EncodedEntry encode_entry_slots(Context& ctx, std::span<const int32_t> tokens, int slots,
                                std::span<const int32_t> probe, SlotChoice* choice = nullptr);

}  // namespace skiff::memory

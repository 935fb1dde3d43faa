#include "dist/wire.h"

#include <cstring>

#include "base/error.h"

namespace skiff::dist {

namespace {

template <typename T>
T read(std::span<const uint8_t> bytes, size_t offset) {
  T value;
  std::memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

}  // namespace

std::vector<uint8_t> encode_batch(const BatchHeader& header, std::span<const SeqRows> seqs, const float* hidden,
                                  int dim) {
  const size_t head = sizeof(BatchHeader) + seqs.size() * sizeof(SeqRows);
  const size_t payload = static_cast<size_t>(header.T) * static_cast<size_t>(dim) * sizeof(float);
  std::vector<uint8_t> out(head + payload);
  std::memcpy(out.data(), &header, sizeof(BatchHeader));
  if (!seqs.empty()) std::memcpy(out.data() + sizeof(BatchHeader), seqs.data(), seqs.size() * sizeof(SeqRows));
  if (payload > 0) std::memcpy(out.data() + head, hidden, payload);
  return out;
}

Batch parse_batch(std::span<const uint8_t> bytes, int dim, int n_layers, int sequences, int context_length) {
  if (bytes.size() < sizeof(BatchHeader)) fail("pipeline: a batch message of {} bytes is too short", bytes.size());
  Batch b;
  b.header = read<BatchHeader>(bytes, 0);
  const BatchHeader& h = b.header;
  if (h.n_seqs < 1 || h.n_seqs > sequences)
    fail("pipeline: a batch of {} sequences (1..{} are decoded)", h.n_seqs, sequences);
  if (h.first < 0 || h.last > n_layers || h.first >= h.last)
    fail("pipeline: a batch for layers [{}, {}) of a {}-layer model", h.first, h.last, n_layers);
  if (h.T < 1 || h.T > static_cast<int64_t>(sequences) * context_length) fail("pipeline: a batch of {} rows", h.T);
  b.payload_offset = sizeof(BatchHeader) + static_cast<size_t>(h.n_seqs) * sizeof(SeqRows);
  const size_t payload = static_cast<size_t>(h.T) * static_cast<size_t>(dim) * sizeof(float);
  if (bytes.size() != b.payload_offset + payload)
    fail("pipeline: a batch of {} rows of width {} in {} bytes (expected {})", h.T, dim, bytes.size(),
         b.payload_offset + payload);
  std::vector<bool> seen(static_cast<size_t>(sequences), false);
  int64_t total = 0;
  for (int32_t i = 0; i < h.n_seqs; ++i) {
    const SeqRows r = read<SeqRows>(bytes, sizeof(BatchHeader) + static_cast<size_t>(i) * sizeof(SeqRows));
    if (r.seq < 0 || r.seq >= sequences || seen[static_cast<size_t>(r.seq)])
      fail("pipeline: a batch names sequence {} (0..{}, once each)", r.seq, sequences - 1);
    seen[static_cast<size_t>(r.seq)] = true;
    if (r.rows < 1 || r.pos < 0 || static_cast<int64_t>(r.pos) + r.rows > context_length)
      fail("pipeline: sequence {} gets {} rows at position {} (context {})", r.seq, r.rows, r.pos, context_length);
    total += r.rows;
    b.seqs.push_back(r);
  }
  if (total != h.T) fail("pipeline: a batch's sequences hold {} rows, its header says {}", total, h.T);
  return b;
}

CopyPrefix parse_copy(std::span<const uint8_t> bytes, int sequences, int context_length) {
  if (bytes.size() != sizeof(CopyPrefix)) fail("pipeline: a copy message of {} bytes", bytes.size());
  const CopyPrefix c = read<CopyPrefix>(bytes, 0);
  if (c.from < 0 || c.from >= sequences || c.to < 0 || c.to >= sequences || c.from == c.to || c.n < 0 ||
      c.n > context_length)
    fail("pipeline: a copy of {} positions from sequence {} to {} ({} sequences)", c.n, c.from, c.to, sequences);
  return c;
}

std::vector<uint8_t> encode_plan(const PlanMessage& plan) {
  std::vector<int32_t> v = {plan.context_length, plan.sequences, plan.plan.stages()};
  for (const LayerRange& r : plan.plan.ranges) {
    v.push_back(r.first);
    v.push_back(r.last);
  }
  std::vector<uint8_t> out(v.size() * sizeof(int32_t));
  std::memcpy(out.data(), v.data(), out.size());
  return out;
}

PlanMessage parse_plan(std::span<const uint8_t> bytes, int stages, int n_layers) {
  if (bytes.size() % sizeof(int32_t) != 0 || bytes.size() < 3 * sizeof(int32_t))
    fail("pipeline: a stage plan of {} bytes", bytes.size());
  PlanMessage p;
  p.context_length = read<int32_t>(bytes, 0);
  p.sequences = read<int32_t>(bytes, 4);
  const int32_t n = read<int32_t>(bytes, 8);
  if (n != stages || bytes.size() != (3 + 2 * static_cast<size_t>(stages)) * sizeof(int32_t))
    fail("pipeline: a stage plan for {} stages in {} bytes ({} ranks)", n, bytes.size(), stages);
  if (p.context_length < 1 || p.sequences < 1 || p.sequences > (1 << 16))
    fail("pipeline: a stage plan with context {} and {} sequences", p.context_length, p.sequences);
  for (int s = 0; s < stages; ++s)
    p.plan.ranges.push_back({read<int32_t>(bytes, (3 + 2 * static_cast<size_t>(s)) * 4),
                             read<int32_t>(bytes, (4 + 2 * static_cast<size_t>(s)) * 4)});
  validate_stage_plan(p.plan, n_layers, stages);
  return p;
}

}  // namespace skiff::dist

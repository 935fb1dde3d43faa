// The flash pack (LLM in a Flash, section 3.2 "bundling"): a folder with
//
//   resident.gguf  an ordinary GGUF holding every tensor the engine keeps in RAM (embeddings,
//                  attention, norms, output) plus each layer's FFN gate matrix (the gate
//                  threshold decides activity from it), the model's metadata and tokenizer;
//                  the FFN up/down matrices are left out;
//   bundles.bin    a kPackAlign-byte header, then for layer l and neuron i (l-major) one
//                  bundle [up row i | down column i | gate row i], each `dim` elements of
//                  `type`, padded to `stride` bytes.
//
// Up and down come first so that a reader that already knows the gate (threshold mode)
// fetches only the first 2 * row_bytes of a bundle; a predictor reads all three. Bundle
// (l, i) starts at data_offset + (l * ffn_dim + i) * stride.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "model/model.h"
#include "tensor/dtype.h"

namespace skiff::flash {

inline constexpr uint64_t kPackAlign = 4096;   // O_DIRECT-friendly header size and alignment
inline constexpr uint32_t kPackVersion = 1;
inline constexpr char kPackMagic[8] = {'S', 'K', 'F', 'L', 'A', 'S', 'H', '1'};

struct PackHeader {
  uint32_t version = kPackVersion;
  DType type = DType::F16;  // F32, F16 or BF16
  int n_layers = 0;
  int dim = 0;
  int ffn_dim = 0;
  uint64_t row_bytes = 0;    // bytes of `dim` elements of `type`
  uint64_t stride = 0;       // bytes per bundle: >= 3 * row_bytes, a multiple of 64
  uint64_t data_offset = 0;  // offset of bundle (0, 0): kPackAlign
  uint64_t file_bytes = 0;   // size bundles.bin must have

  uint64_t offset(int layer, int neuron) const {
    return data_offset + (static_cast<uint64_t>(layer) * static_cast<uint64_t>(ffn_dim) +
                          static_cast<uint64_t>(neuron)) * stride;
  }
  uint64_t up_offset() const { return 0; }                // within a bundle
  uint64_t down_offset() const { return row_bytes; }
  uint64_t gate_offset() const { return 2 * row_bytes; }
};

struct PackOptions {
  // Bundle element type (F32, F16 or BF16). Unset: F32/F16/BF16 sources keep their type,
  // quantized sources become F16 (a down COLUMN cuts across the row-wise quant blocks).
  std::optional<DType> type;
  // Type of the resident copy of the gate matrices (threshold mode computes the gate from
  // it). Unset: as in the source. A smaller type (e.g. Q8_0) shrinks the resident set so a
  // tighter budget leaves more room for the neuron caches; the bundles keep `type`.
  std::optional<DType> gate_type;
  // Called as bundles are written: (done, total) over all layers' neurons.
  std::function<void(int64_t done, int64_t total)> progress;
};

// Writes the pack folder `out_dir` (created if missing; existing pack files are replaced
// atomically: temp file + rename) for `model`, which must be a GGUF model with dense FFN
// weights. Throws Error on unsupported types or I/O failure, naming the file.
void write_pack(const Model& model, const std::string& out_dir, const PackOptions& options = {});

// Paths of the two files inside a pack folder.
std::string resident_path(const std::string& pack_dir);
std::string bundles_path(const std::string& pack_dir);

// bundles.bin's header, little-endian, in the first kPackAlign bytes:
//   0 magic[8]  8 version u32  12 type u32 (GGUF type id)  16 n_layers u32  20 dim u32
//   24 ffn_dim u32  28 reserved u32 (0)  32 row_bytes u64  40 stride u64  48 data_offset u64
//   56 file_bytes u64  64 FNV-1a 64 of bytes [0, 64) u64; the rest of the kPackAlign bytes 0.
inline constexpr uint64_t kPackHeaderUsedBytes = 72;

// The header as kPackAlign bytes, checksum included (what write_pack writes).
std::vector<uint8_t> encode_pack_header(const PackHeader& header);

// Checks `bytes` (the first min(file_size, kPackAlign) bytes of a file of `file_size` bytes
// named `name`) as read_pack_header does, and returns the header. Throws Error.
PackHeader parse_pack_header(std::span<const uint8_t> bytes, uint64_t file_size,
                             const std::string& name);

// Reads and checks bundles.bin's header: magic, version, checksum, known type, positive
// sizes, stride >= 3 * row_bytes, file size == file_bytes (truncation). Throws Error naming
// the file and what is wrong.
PackHeader read_pack_header(const std::string& bundles_file);

// Throws Error when the header does not describe `config` (layers, dim, ffn_dim).
void check_pack_matches(const PackHeader& header, const ModelConfig& config,
                        const std::string& bundles_file);

// Loads resident.gguf of a pack as a Model whose layers have ffn_up / ffn_down empty
// (ffn_gate present), and validates bundles.bin against it.
struct LoadedPack {
  std::unique_ptr<Model> model;
  PackHeader header;
  std::string bundles_file;
  std::string dir;  // the pack folder (predictors.gguf lives there)
};
LoadedPack load_pack(const std::string& pack_dir);

}  // namespace skiff::flash

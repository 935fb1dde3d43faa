// Safetensors reader (Hugging Face's weight format), zero-copy over a MappedFile: a u64
// little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}, and an
// optional "__metadata__" of string -> string}, then the data section. Invariants after parse:
// every tensor's bytes equal product(shape) * dtype size, tensors tile the data section exactly
// (no overlap, no gap, nothing after the last one), and every view lies inside the file. Any
// defect throws Error naming the file and the tensor or field.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/mapped_file.h"
#include "tensor/dtype.h"

namespace skiff {

struct SafetensorsTensor {
  std::string name;
  std::string dtype;            // as the file spells it: "F32", "BF16", "I8", ...
  std::optional<DType> type;    // skiff's element type when it can compute with it (F32, F16, BF16)
  std::vector<int64_t> shape;   // row-major, PyTorch order: shape.back() is the row length
  uint64_t begin = 0;           // data_offsets, relative to the data section
  uint64_t end = 0;
  const uint8_t* data = nullptr;  // into the mapping
  size_t nbytes() const { return static_cast<size_t>(end - begin); }

  int64_t element_count() const;
};

class SafetensorsFile {
 public:
  // Largest header accepted: real headers are kilobytes (a few hundred tensors).
  static constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;

  // Parses and validates the header and the tensor table; throws Error on any defect.
  static SafetensorsFile parse(std::shared_ptr<MappedFile> file);
  static SafetensorsFile open(const std::string& path, Residency residency = Residency::kMapped) {
    return parse(MappedFile::open(path, residency));
  }

  const std::string& path() const { return file_->name(); }
  const std::shared_ptr<MappedFile>& file() const { return file_; }
  uint64_t data_offset() const { return data_offset_; }  // 8 + header length
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // In data order (ascending offsets).
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const SafetensorsTensor* find(const std::string& name) const;  // nullptr if absent

 private:
  std::shared_ptr<MappedFile> file_;
  uint64_t data_offset_ = 0;
  std::map<std::string, std::string> metadata_;
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, size_t> index_;
};

// Bytes per element of a safetensors dtype name ("F32" -> 4, "BF16" -> 2, "I8" -> 1, ...);
// nullopt for names the format does not define.
std::optional<size_t> safetensors_dtype_size(const std::string& dtype);

}  // namespace skiff

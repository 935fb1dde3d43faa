// GGUF v2/v3 reader (over a MappedFile, zero-copy) and writer.
// Reader: every metadata value type including nested arrays; `general.alignment`; tensor
// infos validated (name, dims, known type, offset aligned and inside the file). Any defect
// throws Error naming the file, the byte offset and what is wrong.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "base/mapped_file.h"
#include "tensor/dtype.h"

namespace skiff {

enum class GgufType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6,
  BOOL = 7, STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};

// A metadata value. Arrays hold their element type and the elements as GgufValues.
struct GgufValue {
  GgufType type = GgufType::UINT8;
  std::variant<uint64_t, int64_t, double, bool, std::string, std::vector<GgufValue>> value;
  GgufType array_type = GgufType::UINT8;  // element type, for ARRAY

  static GgufValue u32(uint32_t v) { return {GgufType::UINT32, uint64_t{v}}; }
  static GgufValue i32(int32_t v) { return {GgufType::INT32, int64_t{v}}; }
  static GgufValue f32(float v) { return {GgufType::FLOAT32, double{v}}; }
  static GgufValue boolean(bool v) { return {GgufType::BOOL, v}; }
  static GgufValue str(std::string v) { return {GgufType::STRING, std::move(v)}; }
  static GgufValue array(GgufType element_type, std::vector<GgufValue> items) {
    GgufValue v{GgufType::ARRAY, std::move(items)};
    v.array_type = element_type;
    return v;
  }

  bool is_integer() const;  // any of the 8 integer types
  bool is_number() const;   // integer or float
  // Conversions; throw Error naming `what` when the value has another type or is out of range.
  int64_t as_int(const std::string& what) const;
  double as_double(const std::string& what) const;
  bool as_bool(const std::string& what) const;
  const std::string& as_string(const std::string& what) const;
  const std::vector<GgufValue>& as_array(const std::string& what) const;
  std::string to_display_string(size_t max_array_items = 8) const;  // for `skiff info`
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // ne[0] first: dims[0] is the row length (fastest varying)
  DType type = DType::F32;
  uint64_t offset = 0;            // relative to the start of the data section
  const uint8_t* data = nullptr;  // into the mapping
  size_t nbytes = 0;

  int64_t element_count() const;
};

class GgufFile {
 public:
  // Parses the whole header and tensor table; throws Error on any defect.
  static GgufFile parse(std::shared_ptr<MappedFile> file);
  static GgufFile open(const std::string& path) { return parse(MappedFile::open(path)); }

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::string& path() const { return file_->name(); }
  const std::shared_ptr<MappedFile>& file() const { return file_; }

  // Metadata in file order, plus lookup.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return metadata_; }
  const GgufValue* find(const std::string& key) const;  // nullptr if absent
  // Typed getters: throw Error "<path>: missing metadata key <key>" / wrong type.
  int64_t get_int(const std::string& key) const;
  int64_t get_int(const std::string& key, int64_t fallback) const;
  double get_double(const std::string& key, double fallback) const;
  std::string get_string(const std::string& key, const std::string& fallback) const;
  bool get_bool(const std::string& key, bool fallback) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(const std::string& name) const;  // nullptr if absent

 private:
  std::shared_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::map<std::string, size_t> metadata_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

// Builds a GGUF v3 file in memory and writes it atomically. Tensors are written in the order
// added, each aligned to `alignment` (general.alignment is written when it is not 32).
class GgufWriter {
 public:
  explicit GgufWriter(uint64_t alignment = 32) : alignment_(alignment) {}
  void set(const std::string& key, GgufValue value);  // replaces an existing key
  // dims[0] is the row length. `data` must hold row_bytes(type, dims[0]) * rows bytes.
  void add_tensor(const std::string& name, DType type, std::vector<int64_t> dims,
                  std::span<const uint8_t> data);
  std::vector<uint8_t> serialize() const;
  void write(const std::string& path) const;  // atomically

 private:
  struct PendingTensor {
    std::string name;
    DType type;
    std::vector<int64_t> dims;
    std::vector<uint8_t> data;
  };
  uint64_t alignment_;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<PendingTensor> tensors_;
};

}  // namespace skiff

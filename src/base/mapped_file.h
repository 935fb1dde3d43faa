// A read-only view of a whole file, memory-mapped (or, for embedded data, a borrowed span).
// Model weights are used in place from this mapping: no second copy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace skiff {

class MappedFile {
 public:
  // Maps `path` read-only. Throws Error naming the path when it cannot be opened or mapped.
  static std::shared_ptr<MappedFile> open(const std::string& path);
  // Wraps memory that outlives the object (e.g. the model linked into the binary).
  static std::shared_ptr<MappedFile> borrow(std::span<const uint8_t> bytes, std::string name);

  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::string& name() const { return name_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool owns_mapping_ = false;
  std::string name_;
};

// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, then rename.
void write_file_atomically(const std::string& path, std::span<const uint8_t> bytes);

}  // namespace skiff

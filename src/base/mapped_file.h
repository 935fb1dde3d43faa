// A read-only view of a whole file, memory-mapped (or, for embedded data, a borrowed span).
// Model weights are used in place from this mapping: no second copy. On request the file is
// instead read into anonymous memory backed by transparent huge pages (see Residency).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace skiff {

// kMapped: the file's page cache pages, mapped (4 KiB pages here). kHugePages: a copy in
// anonymous 2 MiB transparent huge pages, after which the file's page cache is dropped (so
// the file is still held once in RAM). The copy costs a read of the file at load; it pays
// where TLB misses are expensive (in a VM every miss is a two-level page walk): on the
// reference shape, F16 pp128 157 -> 170 t/s against a page cache written long before (its
// pages scattered), 188 -> 194 against a freshly read one.
enum class Residency { kMapped, kHugePages };

class MappedFile {
 public:
  // Maps (or, with kHugePages, reads) `path`. Throws Error naming the path when it cannot be
  // opened, mapped or read.
  static std::shared_ptr<MappedFile> open(const std::string& path, Residency residency = Residency::kMapped);
  // Wraps memory that outlives the object (e.g. the model linked into the binary).
  static std::shared_ptr<MappedFile> borrow(std::span<const uint8_t> bytes, std::string name);

  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::string& name() const { return name_; }
  // True when the bytes are a copy in huge pages rather than a mapping of the file.
  bool copied() const { return copied_; }
  // Drops the pages of bytes [p, p + n) from this process's memory when they are a file
  // mapping (the next read faults them in again from the page cache or the file); does
  // nothing for copies and borrowed memory, whose bytes would be lost.
  void release(const uint8_t* p, size_t n) const;

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool copied_ = false;
  void* mapping_ = nullptr;  // what to munmap (null for borrowed bytes): the mapping or the huge-page region
  size_t mapping_size_ = 0;
  std::string name_;
};

// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, then rename.
void write_file_atomically(const std::string& path, std::span<const uint8_t> bytes);

}  // namespace skiff

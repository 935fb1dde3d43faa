#include "base/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "base/error.h"

namespace skiff {

namespace {

constexpr size_t kHugePage = size_t{2} << 20;

// Reads all of fd into a fresh 2 MiB-aligned anonymous region advised to use huge pages.
// Returns the aligned start of the data; *region and *region_size are what to unmap.
void* read_into_huge_pages(int fd, const std::string& path, size_t size, void** region, size_t* region_size) {
  // Over-allocate by one huge page so the data can start on a 2 MiB boundary.
  const size_t length = (size + kHugePage - 1) / kHugePage * kHugePage + kHugePage;
  void* p = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) fail("cannot allocate {} bytes for {}: {}", length, path, std::strerror(errno));
  *region = p;
  *region_size = length;
  auto* data = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(p) + kHugePage - 1) / kHugePage * kHugePage);
  madvise(data, length - static_cast<size_t>(data - static_cast<uint8_t*>(p)), MADV_HUGEPAGE);  // best effort
  size_t off = 0;
  while (off < size) {
    const ssize_t n = pread(fd, data + off, std::min<size_t>(size_t{64} << 20, size - off), static_cast<off_t>(off));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : 0;
      munmap(p, length);
      fail("cannot read {}: {}", path, err ? std::strerror(err) : "the file ended early (was it truncated while loading?)");
    }
    off += static_cast<size_t>(n);
  }
  mprotect(p, length, PROT_READ);
  // The copy is now the only one this process needs: let the kernel drop the page cache.
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  return data;
}

}  // namespace

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path, Residency residency) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open {}: {}", path, std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("cannot open {}: not a regular file", path);
  }
  std::shared_ptr<MappedFile> file(new MappedFile());
  file->name_ = path;
  file->size_ = static_cast<size_t>(st.st_size);
  if (file->size_ > 0 && residency == Residency::kHugePages) {
    try {
      file->data_ = static_cast<const uint8_t*>(read_into_huge_pages(fd, path, file->size_, &file->mapping_,
                                                                     &file->mapping_size_));
    } catch (...) {
      ::close(fd);
      throw;
    }
    file->copied_ = true;
  } else if (file->size_ > 0) {
    void* p = mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      fail("cannot map {}: {}", path, std::strerror(err));
    }
    file->data_ = static_cast<const uint8_t*>(p);
    file->mapping_ = p;
    file->mapping_size_ = file->size_;
  }
  ::close(fd);
  return file;
}

std::shared_ptr<MappedFile> MappedFile::borrow(std::span<const uint8_t> bytes, std::string name) {
  std::shared_ptr<MappedFile> file(new MappedFile());
  file->data_ = bytes.data();
  file->size_ = bytes.size();
  file->name_ = std::move(name);
  return file;
}

MappedFile::~MappedFile() {
  if (mapping_ != nullptr) munmap(mapping_, mapping_size_);
}

void write_file_atomically(const std::string& path, std::span<const uint8_t> bytes) {
  std::string tmp = path + ".tmp" + std::to_string(getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot create {}: {}", tmp, std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      fail("cannot write {}: {}", tmp, std::strerror(err));
    }
    done += static_cast<size_t>(n);
  }
  if (fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    fail("cannot write {}: {}", tmp, std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    fail("cannot rename {} to {}: {}", tmp, path, std::strerror(err));
  }
}

void MappedFile::release(const uint8_t* p, size_t n) const {
  if (copied_ || mapping_ == nullptr || p < data_ || p + n > data_ + size_) return;
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + n) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

}  // namespace skiff

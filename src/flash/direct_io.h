// Reads many small pieces of one file fast (LLM in a Flash, section 3.2): O_DIRECT (no page
// cache, so reads cost what the disk costs and the memory budget holds), many reads in
// flight (io_uring when liburing and the kernel allow it, else a pool of threads calling
// pread), and pieces that are adjacent or close on disk coalesced into one larger aligned
// read. submit() returns at once, so the caller can compute while the disk works.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace skiff::flash {

struct ReadRequest {
  uint64_t offset = 0;  // file offset, any alignment
  size_t bytes = 0;
  uint8_t* dst = nullptr;  // any alignment
};

struct IoStats {
  uint64_t bytes_requested = 0;  // sum of ReadRequest::bytes
  uint64_t bytes_read = 0;       // bytes actually read from the file (alignment, gaps)
  uint64_t reads = 0;            // reads issued to the kernel after coalescing
  double wait_ms = 0;            // time spent blocked in wait()
};

struct IoOptions {
  enum class Backend { kAuto, kUring, kThreads } backend = Backend::kAuto;
  bool direct = true;            // O_DIRECT; silently buffered where unsupported (tmpfs)
  int queue_depth = 32;          // reads in flight (at least 1)
  size_t max_read = 256 * 1024;  // a coalesced read never exceeds this (rounded down
                                 // to a multiple of 4096, at least 4096)
  size_t max_gap = 16 * 1024;    // pieces at most this far apart join one read
};

// Bounce buffers are aligned to 4096 bytes (a multiple of every logical block size in use);
// read offsets and lengths to the file's O_DIRECT alignment (statx STATX_DIOALIGN, often 512
// bytes; 4096 when unknown or buffered). Backend::kAuto takes io_uring when liburing was found at build time and
// the kernel grants a ring, else threads; kUring throws Error when no ring can be had. Use
// from one thread at a time.
class DirectReader {
 public:
  // Opens `path` read-only. Throws Error naming the file when it cannot be opened.
  DirectReader(const std::string& path, const IoOptions& options = {});
  ~DirectReader();
  DirectReader(const DirectReader&) = delete;
  DirectReader& operator=(const DirectReader&) = delete;

  const char* backend() const;  // "io_uring" or "threads"
  bool direct() const;          // whether O_DIRECT is in effect
  size_t alignment() const;     // read offset and length alignment in bytes
  uint64_t file_size() const;

  // Starts reading the requests (in any order; must not overlap each other's dst). The
  // requests' memory must stay valid until wait() returns. Throws Error naming the file and
  // offset, before reading anything, when a request runs past file_size(). Zero-byte
  // requests are ignored. With io_uring at most queue_depth coalesced reads are in flight
  // when submit() returns; the rest are issued from wait() as completions free buffers. It
  // may be called several times before one wait().
  void submit(std::span<const ReadRequest> requests);
  // Blocks until every submitted request has landed; adds the time to stats().wait_ms.
  // Throws Error naming the file and offset on an I/O error or a read past the end of the
  // file (e.g. one truncated since it was opened); the reader stays usable afterwards.
  void wait();

  const IoStats& stats() const;
  void reset_stats();
  // Bytes of aligned bounce buffers the reader holds (fixed after construction), for budget
  // accounting: one buffer of max_read + 4096 bytes per read in flight (queue_depth for
  // io_uring, one per I/O thread, at most 8, for threads), plus alignment slack.
  size_t buffer_bytes() const;
  // The most buffer_bytes() can be for `options` (whichever backend opens), for planning
  // a memory budget before the reader exists.
  static size_t max_buffer_bytes(const IoOptions& options);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace skiff::flash

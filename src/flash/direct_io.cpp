// DirectReader: the flash-loading read path. Requests are split so no read exceeds max_read,
// sorted, and coalesced into aligned reads (O_DIRECT needs offsets and lengths aligned to
// the file's direct-I/O alignment, 512 or 4096 bytes, and aligned buffers); each read lands in a preallocated bounce buffer and its pieces are copied out
// on completion. Two backends keep many reads in flight: io_uring (one ring, driven from the
// caller's thread) and a small pool of threads calling pread, for kernels or sandboxes that
// refuse io_uring.
#include "flash/direct_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#if defined(SKIFF_HAVE_LIBURING)
#include <liburing.h>
#endif

#include "base/error.h"

namespace skiff::flash {
namespace {

// Bounce buffers are aligned to 4096 bytes, a multiple of every logical block size in use.
// Read offsets and lengths use the file's own direct-I/O alignment when statx reports it
// (often 512 bytes: a 2 KiB bundle then costs 2.5 KiB of reading, not 8 KiB), else 4096.
constexpr size_t kAlign = 4096;
constexpr int kMaxThreads = 8;

uint64_t align_down(uint64_t x, uint64_t a) { return x / a * a; }
uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

// The offset alignment O_DIRECT reads of `fd` need: statx's STATX_DIOALIGN when the kernel
// and file system report it (a power of two from 512 to 4096), else 4096.
size_t direct_io_alignment(int fd) {
#if defined(STATX_DIOALIGN)
  struct statx stx {};
  if (::statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 && (stx.stx_mask & STATX_DIOALIGN) != 0) {
    const uint32_t a = stx.stx_dio_offset_align;
    const bool usable = a >= 512 && a <= kAlign && (a & (a - 1)) == 0 && stx.stx_dio_mem_align <= a;  // buffers are used at offsets that are multiples of a
    if (usable) return a;
  }
#else
  (void)fd;
#endif
  return kAlign;
}

// One requested piece; a request larger than max_read becomes several.
struct Piece {
  uint64_t offset;
  size_t bytes;
  uint8_t* dst;
};

// One aligned read issued to the kernel: [start, start + length) with length a multiple of
// the alignment; `needed` bytes from start must arrive (the rest may lie past the end of the file).
struct MergedRead {
  uint64_t start = 0;
  size_t length = 0;
  size_t needed = 0;
  std::vector<Piece> pieces;
};

// Splits, sorts and coalesces requests into aligned reads of at most max_read bytes.
std::vector<MergedRead> coalesce(std::vector<Piece> pieces, size_t max_read, size_t max_gap, size_t align) {
  std::sort(pieces.begin(), pieces.end(),
            [](const Piece& a, const Piece& b) { return a.offset < b.offset; });
  std::vector<MergedRead> reads;
  uint64_t end = 0;  // unaligned end of the current read's pieces
  for (const Piece& p : pieces) {
    const uint64_t p_end = p.offset + p.bytes;
    const bool joins = !reads.empty() && p.offset <= end + max_gap &&
                       align_up(std::max(end, p_end), align) - reads.back().start <= max_read;
    if (!joins) {
      reads.emplace_back();
      reads.back().start = align_down(p.offset, align);
      end = 0;
    }
    MergedRead& r = reads.back();
    end = std::max(end, p_end);
    r.pieces.push_back(p);
    r.needed = static_cast<size_t>(end - r.start);
    r.length = static_cast<size_t>(align_up(end, align) - r.start);
  }
  return reads;
}

// Copies a finished read's pieces from its bounce buffer to their destinations.
void scatter(const MergedRead& read, const uint8_t* buffer) {
  for (const Piece& p : read.pieces) std::memcpy(p.dst, buffer + (p.offset - read.start), p.bytes);
}

}  // namespace

struct DirectReader::Impl {
  std::string path;
  IoOptions options;
  int fd = -1;
  bool direct = false;
  size_t align = kAlign;  // read offsets and lengths (direct_io_alignment)
  uint64_t file_size = 0;
  size_t max_read = 0;     // options.max_read rounded to a multiple of kAlign
  size_t buffer_size = 0;  // one bounce buffer: max_read + kAlign
  std::vector<uint8_t> storage;
  uint8_t* buffers = nullptr;  // kAlign-aligned start inside storage
  IoStats stats;
  std::string error;  // first failure since the last wait(); guarded by mutex for threads

  uint8_t* buffer(size_t i) { return buffers + i * buffer_size; }
  void allocate_buffers(size_t count);
  std::string read_error(uint64_t offset, int error) const;

  // Reads `read` into buf with blocking preads (looping on short reads); returns the
  // bytes the kernel delivered, or throws on an error or an early end of file.
  size_t pread_all(const MergedRead& read, uint8_t* buf) const;

  // --- threads backend ---
  std::vector<std::thread> threads;
  std::mutex mutex;
  std::condition_variable work_cv, done_cv;
  std::deque<MergedRead> queue;  // guarded by mutex
  size_t outstanding = 0;        // queued or running reads, guarded by mutex
  bool stopping = false;         // guarded by mutex
  uint64_t bytes_read = 0;       // guarded by mutex, folded into stats by wait()
  void start_threads(int count);
  void worker(size_t index);
  void stop_threads();

  // --- io_uring backend ---
  bool uring = false;
#if defined(SKIFF_HAVE_LIBURING)
  struct Slot {
    MergedRead read;
    size_t got = 0;
  };
  io_uring ring{};
  std::vector<Slot> slots;         // one per bounce buffer
  std::vector<size_t> free_slots;  // bounce buffers not in flight
  std::deque<MergedRead> pending;  // reads waiting for a free buffer
  size_t in_flight = 0;
  bool try_init_uring();
  void issue(size_t slot);  // queues the rest of slots[slot] on the ring
  void pump();              // moves pending reads into free buffers and submits
  void complete(const io_uring_cqe* cqe);
  void drain();  // waits for every in-flight read (errors or not)
  void wait_uring();
#endif
};

void DirectReader::Impl::allocate_buffers(size_t count) {
  storage.assign(count * buffer_size + kAlign, 0);
  const auto address = reinterpret_cast<uintptr_t>(storage.data());
  buffers = storage.data() + (kAlign - address % kAlign) % kAlign;
}

std::string DirectReader::Impl::read_error(uint64_t offset, int err) const {
  return fmt::format("direct_io: {}: read at offset {} failed: {}", path, offset,
                     err == 0 ? "unexpected end of file" : std::strerror(err));
}

size_t DirectReader::Impl::pread_all(const MergedRead& read, uint8_t* buf) const {
  size_t got = 0, delivered = 0;
  while (got < read.needed) {
    // Resume from an aligned offset: O_DIRECT rejects unaligned ones; re-reading is harmless.
    const size_t from = static_cast<size_t>(align_down(got, align));
    const ssize_t n =
        ::pread(fd, buf + from, read.length - from, static_cast<off_t>(read.start + from));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw Error(read_error(read.start + from, n < 0 ? errno : 0));
    got = from + static_cast<size_t>(n);
    delivered += static_cast<size_t>(n);
  }
  return delivered;
}

// --- threads backend ------------------------------------------------------------------------

void DirectReader::Impl::start_threads(int count) {
  allocate_buffers(static_cast<size_t>(count));  // one bounce buffer per thread
  for (int i = 0; i < count; ++i) threads.emplace_back([this, i] { worker(size_t(i)); });
}

void DirectReader::Impl::worker(size_t index) {
  uint8_t* buf = buffer(index);
  std::unique_lock lock(mutex);
  for (;;) {
    work_cv.wait(lock, [this] { return stopping || !queue.empty(); });
    if (stopping) return;
    MergedRead read = std::move(queue.front());
    queue.pop_front();
    lock.unlock();
    std::string failure;
    size_t delivered = 0;
    try {
      delivered = pread_all(read, buf);
      scatter(read, buf);
    } catch (const Error& e) {
      failure = e.what();
    }
    lock.lock();
    bytes_read += delivered;
    if (!failure.empty() && error.empty()) error = std::move(failure);
    if (--outstanding == 0) done_cv.notify_all();
  }
}

void DirectReader::Impl::stop_threads() {
  {
    std::unique_lock lock(mutex);
    outstanding -= queue.size();  // drop reads nobody started; let running ones finish
    queue.clear();
    done_cv.wait(lock, [this] { return outstanding == 0; });
    stopping = true;
  }
  work_cv.notify_all();
  for (std::thread& t : threads) t.join();
  threads.clear();
}

// --- io_uring backend -----------------------------------------------------------------------

#if defined(SKIFF_HAVE_LIBURING)

bool DirectReader::Impl::try_init_uring() {
  if (io_uring_queue_init(static_cast<unsigned>(options.queue_depth), &ring, 0) < 0) {
    return false;
  }
  const size_t depth = static_cast<size_t>(options.queue_depth);
  allocate_buffers(depth);
  slots.resize(depth);
  for (size_t i = depth; i-- > 0;) free_slots.push_back(i);
  return true;
}

void DirectReader::Impl::issue(size_t slot) {
  Slot& s = slots[slot];
  const size_t from = static_cast<size_t>(align_down(s.got, align));  // O_DIRECT needs alignment
  io_uring_sqe* sqe = io_uring_get_sqe(&ring);
  if (sqe == nullptr) {  // cannot happen: the ring has an entry per bounce buffer
    io_uring_submit(&ring);
    sqe = io_uring_get_sqe(&ring);
    if (sqe == nullptr) fail("direct_io: {}: io_uring submission queue full", path);
  }
  io_uring_prep_read(sqe, fd, buffer(slot) + from, static_cast<unsigned>(s.read.length - from),
                     s.read.start + from);
  io_uring_sqe_set_data64(sqe, slot);
}

void DirectReader::Impl::pump() {
  bool queued = false;
  while (!pending.empty() && !free_slots.empty()) {
    const size_t slot = free_slots.back();
    free_slots.pop_back();
    slots[slot].read = std::move(pending.front());
    slots[slot].got = 0;
    pending.pop_front();
    issue(slot);
    ++in_flight;
    queued = true;
  }
  if (queued) io_uring_submit(&ring);
}

void DirectReader::Impl::complete(const io_uring_cqe* cqe) {
  const size_t slot = static_cast<size_t>(io_uring_cqe_get_data64(cqe));
  Slot& s = slots[slot];
  const int res = cqe->res;
  const size_t from = static_cast<size_t>(align_down(s.got, align));
  if (res == -EINTR || res == -EAGAIN) {
    issue(slot);
    io_uring_submit(&ring);
    return;
  }
  if (res > 0) {
    stats.bytes_read += static_cast<uint64_t>(res);
    s.got = from + static_cast<size_t>(res);
    if (s.got < s.read.needed) {  // short read: fetch the remainder
      issue(slot);
      io_uring_submit(&ring);
      return;
    }
    scatter(s.read, buffer(slot));
  } else if (error.empty()) {
    error = read_error(s.read.start + from, -res);
  }
  s.read = MergedRead();
  free_slots.push_back(slot);
  --in_flight;
}

void DirectReader::Impl::drain() {
  while (in_flight > 0) {
    io_uring_cqe* cqe = nullptr;
    const int rc = io_uring_wait_cqe(&ring, &cqe);
    if (rc == -EINTR) continue;
    if (rc < 0) {  // the ring itself failed; nothing more will complete
      if (error.empty()) error = read_error(0, -rc);
      in_flight = 0;
      return;
    }
    complete(cqe);
    io_uring_cqe_seen(&ring, cqe);
    if (!error.empty()) pending.clear();  // stop issuing after the first failure
    pump();
  }
}

void DirectReader::Impl::wait_uring() {
  pump();
  drain();
}

#endif  // SKIFF_HAVE_LIBURING

// --- DirectReader ---------------------------------------------------------------------------

DirectReader::DirectReader(const std::string& path, const IoOptions& options)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.path = path;
  m.options = options;
  if (options.queue_depth < 1) fail("direct_io: {}: queue_depth {} < 1", path, options.queue_depth);
  m.max_read = static_cast<size_t>(std::max<uint64_t>(kAlign, align_down(options.max_read, kAlign)));
  m.buffer_size = m.max_read + kAlign;
  if (options.direct) {
    m.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
    m.direct = m.fd >= 0;
    if (m.fd < 0 && errno != EINVAL) {  // EINVAL: the file system refuses O_DIRECT
      fail("direct_io: cannot open {}: {}", path, std::strerror(errno));
    }
  }
  if (m.fd < 0) m.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (m.fd < 0) fail("direct_io: cannot open {}: {}", path, std::strerror(errno));
  if (m.direct) m.align = direct_io_alignment(m.fd);
  struct stat st {};
  if (::fstat(m.fd, &st) != 0) {
    const int err = errno;
    ::close(m.fd);
    fail("direct_io: cannot stat {}: {}", path, std::strerror(err));
  }
  m.file_size = static_cast<uint64_t>(st.st_size);

  using Backend = IoOptions::Backend;
#if defined(SKIFF_HAVE_LIBURING)
  if (options.backend != Backend::kThreads) m.uring = m.try_init_uring();
#endif
  if (options.backend == Backend::kUring && !m.uring) {
    ::close(m.fd);
    fail("direct_io: {}: io_uring is not available (liburing missing or refused by the kernel)",
         path);
  }
  if (!m.uring) m.start_threads(std::min(options.queue_depth, kMaxThreads));
}

DirectReader::~DirectReader() {
  Impl& m = *impl_;
#if defined(SKIFF_HAVE_LIBURING)
  if (m.uring) {
    m.pending.clear();
    m.drain();  // the kernel may still write into the bounce buffers
    io_uring_queue_exit(&m.ring);
  }
#endif
  if (!m.threads.empty()) m.stop_threads();
  ::close(m.fd);
}

const char* DirectReader::backend() const { return impl_->uring ? "io_uring" : "threads"; }
bool DirectReader::direct() const { return impl_->direct; }
size_t DirectReader::alignment() const { return impl_->align; }
uint64_t DirectReader::file_size() const { return impl_->file_size; }
const IoStats& DirectReader::stats() const { return impl_->stats; }
void DirectReader::reset_stats() { impl_->stats = IoStats(); }
size_t DirectReader::buffer_bytes() const { return impl_->storage.size(); }

size_t DirectReader::max_buffer_bytes(const IoOptions& options) {
  // allocate_buffers: one buffer of max_read (rounded) + kAlign per read in flight (at most
  // queue_depth: io_uring's depth, or min(queue_depth, kMaxThreads) threads) + kAlign slack.
  const size_t max_read = static_cast<size_t>(std::max<uint64_t>(kAlign, align_down(options.max_read, kAlign)));
  return static_cast<size_t>(std::max(1, options.queue_depth)) * (max_read + kAlign) + kAlign;
}

void DirectReader::submit(std::span<const ReadRequest> requests) {
  Impl& m = *impl_;
  std::vector<Piece> pieces;
  pieces.reserve(requests.size());
  for (const ReadRequest& r : requests) {  // reject the whole batch before reading any
    if (r.bytes > 0 && (r.offset > m.file_size || r.bytes > m.file_size - r.offset)) {
      fail(
          "direct_io: {}: read of {} bytes at offset {} runs past the end of the file "
          "({} bytes)",
          m.path, r.bytes, r.offset, m.file_size);
    }
  }
  for (const ReadRequest& r : requests) {
    if (r.bytes == 0) continue;
    m.stats.bytes_requested += r.bytes;
    // Split so that each piece's aligned span fits one read.
    uint64_t offset = r.offset;
    uint8_t* dst = r.dst;
    const uint64_t end = r.offset + r.bytes;
    while (offset < end) {
      const uint64_t piece_end = std::min<uint64_t>(end, align_down(offset, m.align) + m.max_read);
      pieces.push_back({offset, static_cast<size_t>(piece_end - offset), dst});
      dst += piece_end - offset;
      offset = piece_end;
    }
  }
  if (pieces.empty()) return;
  std::vector<MergedRead> reads = coalesce(std::move(pieces), m.max_read, m.options.max_gap, m.align);
  m.stats.reads += reads.size();
#if defined(SKIFF_HAVE_LIBURING)
  if (m.uring) {
    for (MergedRead& r : reads) m.pending.push_back(std::move(r));
    // Reap what already finished so its buffers take more reads; what does not fit in
    // queue_depth buffers now is submitted by wait() as reads complete.
    io_uring_cqe* cqe = nullptr;
    while (m.in_flight > 0 && io_uring_peek_cqe(&m.ring, &cqe) == 0 && cqe != nullptr) {
      m.complete(cqe);
      io_uring_cqe_seen(&m.ring, cqe);
    }
    if (m.error.empty()) m.pump();
    return;
  }
#endif
  {
    std::lock_guard lock(m.mutex);
    m.outstanding += reads.size();
    for (MergedRead& r : reads) m.queue.push_back(std::move(r));
  }
  m.work_cv.notify_all();
}

void DirectReader::wait() {
  Impl& m = *impl_;
  const auto start = std::chrono::steady_clock::now();
  std::string error;
#if defined(SKIFF_HAVE_LIBURING)
  if (m.uring) {
    if (m.error.empty()) {
      m.wait_uring();
    } else {
      m.pending.clear();
      m.drain();
    }
    error = std::exchange(m.error, std::string());
  }
#endif
  if (!m.uring) {
    std::unique_lock lock(m.mutex);
    m.done_cv.wait(lock, [&m] { return m.outstanding == 0; });
    m.stats.bytes_read += std::exchange(m.bytes_read, 0);
    error = std::exchange(m.error, std::string());
  }
  m.stats.wait_ms +=
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  if (!error.empty()) throw Error(error);
}

}  // namespace skiff::flash

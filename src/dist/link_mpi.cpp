// The MPI transport of link.h: the only file that includes mpi.h. MPI calls come from one
// thread at a time (MPI_THREAD_SERIALIZED: a server's model thread makes them after the main
// thread joined the job; the thread pool never sends). Waits poll
// (MPI_Iprobe / MPI_Test) against a deadline instead of blocking in MPI, so a dead or stuck
// peer becomes an Error; between polls the rank yields, then sleeps (poll_until), so a
// waiting rank does not steal a core from a computing one when ranks outnumber cores.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <exception>
#include <limits>
#include <thread>

#include "base/error.h"
#include "dist/link.h"

namespace skiff::dist {

namespace {

using Clock = std::chrono::steady_clock;

// A wait first spins (yielding the core to any other runnable thread) for kSpinMicros: an
// answer within that costs no wake-up, which on these VMs is worth more than the cycles (the
// built-in model's 4 stages on 2 cores: 440 tok/s with 50 us, 1520 with 2 ms). Then it naps,
// at most 100 us at a time, and after a second of waiting (an idle server's stages) at most
// 2 ms, so an idle rank is not busy. SKIFF_SPIN_US overrides the spin (tuning).
const int kSpinMicros = [] {
  const char* v = std::getenv("SKIFF_SPIN_US");
  return v ? std::max(0, std::atoi(v)) : 2000;
}();

// Polls `done` until it returns true or `timeout_seconds` pass; false on timeout.
template <typename Fn>
bool poll_until(double timeout_seconds, Fn&& done) {
  const Clock::time_point start = Clock::now();
  const Clock::time_point deadline =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_seconds));
  const Clock::time_point spin_until = start + std::chrono::microseconds(kSpinMicros);
  const Clock::time_point long_wait = start + std::chrono::seconds(1);
  std::chrono::microseconds nap(5);
  for (;;) {
    if (done()) return true;
    const Clock::time_point now = Clock::now();
    if (now >= deadline) return false;
    if (now < spin_until) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(nap);
      nap = std::min(nap * 2, std::chrono::microseconds(now < long_wait ? 100 : 2000));
    }
  }
}

std::string peer_name(int rank) { return rank == Link::kAnySource ? "any rank" : fmt::format("rank {}", rank); }

class MpiLink : public Link {
 public:
  MpiLink() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS)
        fail("pipeline: MPI_Init failed");
      if (provided < MPI_THREAD_SERIALIZED)
        fail("pipeline: this MPI library does not allow calls from more than one thread (MPI_THREAD_SERIALIZED)");
      // Errors come back as codes (then an Error here) instead of ending the job silently.
      MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  ~MpiLink() override {
    // While an error unwinds, MPI_Finalize would wait for ranks that wait for this one: the
    // CLI prints the error and calls abort_job_after_error instead.
    if (std::uncaught_exceptions() > 0) return;
    try {
      flush();
    } catch (const Error& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
    }
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  [[noreturn]] void abort(int code) override {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);  // MPI_Abort does not return; in case it does
  }

 protected:
  void send_bytes(int to, int tag, std::span<const uint8_t> bytes, double timeout_seconds) override {
    // MPI counts are ints: one message carries at most 2 GiB (e.g. 32768 positions of a
    // 16384-wide model); more would need chunking, which no caller needs yet.
    if (bytes.size() > static_cast<size_t>(std::numeric_limits<int>::max()))
      fail("pipeline: a message of {} bytes to rank {} is over MPI's 2 GiB (a shorter prompt batch?)", bytes.size(), to);
    // The send goes on while this rank computes (MPI progresses it in later calls: the next
    // send, a receive's polling). Waiting for it here could deadlock two ranks that send
    // each other large messages at once, each waiting for the other to receive.
    PendingSend& p = pending_.emplace_back();
    p.bytes.assign(bytes.begin(), bytes.end());
    p.to = to;
    p.started = Clock::now();
    check(MPI_Isend(p.bytes.data(), static_cast<int>(p.bytes.size()), MPI_BYTE, to, tag, MPI_COMM_WORLD, &p.request),
          "send to", to);
    progress(timeout_seconds);  // retires earlier sends; a small message usually leaves right here
  }

  void flush() override {
    const double limit = timeout();
    if (!poll_until(limit, [&] { return progress(limit); }))
      fail("pipeline: could not send to rank {} within {:g} s (is it alive? --stage-timeout)", pending_.front().to,
           limit);
  }

  Message recv_bytes(int from, double timeout_seconds, const std::string& what) override {
    const int source = from == kAnySource ? MPI_ANY_SOURCE : from;
    MPI_Status status;
    int found = 0;
    if (!poll_until(timeout_seconds, [&] {
          progress(timeout_seconds);
          check(MPI_Iprobe(source, MPI_ANY_TAG, MPI_COMM_WORLD, &found, &status), "receive from", from);
          return found != 0;
        })) {
      fail("pipeline: waited {:g} s for {} from {}: none came (a rank died or hangs; --stage-timeout)",
           timeout_seconds, what, peer_name(from));
    }
    int count = 0;
    MPI_Get_count(&status, MPI_BYTE, &count);
    Message m;
    m.source = status.MPI_SOURCE;
    m.tag = status.MPI_TAG;
    m.bytes.resize(static_cast<size_t>(count));
    check(MPI_Recv(m.bytes.data(), count, MPI_BYTE, m.source, m.tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE),
          "receive from", m.source);
    return m;
  }

 private:
  struct PendingSend {
    MPI_Request request;
    std::vector<uint8_t> bytes;
    int to = 0;
    Clock::time_point started;
  };

  // Retires the sends that are done; Error when one has waited more than the timeout. True
  // when none is left.
  bool progress(double timeout_seconds) {
    while (!pending_.empty()) {
      PendingSend& p = pending_.front();
      int done = 0;
      check(MPI_Test(&p.request, &done, MPI_STATUS_IGNORE), "send to", p.to);
      if (!done) {
        if (std::chrono::duration<double>(Clock::now() - p.started).count() > timeout_seconds)
          fail("pipeline: could not send to rank {} within {:g} s (is it alive? --stage-timeout)", p.to,
               timeout_seconds);
        return false;
      }
      pending_.pop_front();
    }
    return true;
  }

  void check(int rc, const char* what, int peer) const {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    fail("pipeline: MPI {} {}: {}", what, peer_name(peer), std::string(text, static_cast<size_t>(len)));
  }

  int rank_ = 0, size_ = 1;
  std::deque<PendingSend> pending_;  // in the order sent
};

}  // namespace

std::unique_ptr<Link> open_mpi_link() { return std::make_unique<MpiLink>(); }

namespace {
// MPI_COMM_WORLD's rank and size, or -1 and 0 outside a job.
void job_shape(int& rank, int& size) {
  rank = -1;
  size = 0;
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) return;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
}
}  // namespace

std::string error_prefix() {
  int rank = 0, size = 0;
  job_shape(rank, size);
  return size > 1 ? fmt::format("rank {}: ", rank) : "";
}

void abort_job_after_error(int code) {
  int rank = 0, size = 0;
  job_shape(rank, size);
  if (size > 1) {
    std::fflush(stdout);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
  }
}

}  // namespace skiff::dist

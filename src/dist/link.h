// The message layer between pipeline stages: tagged byte messages between ranks, every wait
// bounded by a deadline (a dead or stuck rank is an Error naming it, never a hang), with an
// optional simulated link (--sim-link) and byte counts. The MPI transport is link_mpi.cpp,
// the only file that includes mpi.h; a build without MPI gets link_none.cpp, whose
// open_mpi_link() fails with "built without MPI".
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace skiff::dist {

// --sim-link BANDWIDTH,LATENCY: every message arrives latency + bytes * 8 / bandwidth after
// it was sent, later when the link to that rank is still busy with earlier messages (each
// sender-receiver pair is one link of that bandwidth). A simulation on one host: the sender
// stamps the arrival time on the message and goes on (its computing overlaps the transfer,
// as with a real network card); the receiver holds the message until that time. No jitter,
// no loss, no contention between different pairs.
struct SimLink {
  double bits_per_second = 0;  // 0: no simulation
  double latency_seconds = 0;
  bool enabled() const { return bits_per_second > 0; }
  double delay_seconds(size_t bytes) const {
    return enabled() ? latency_seconds + static_cast<double>(bytes) * 8.0 / bits_per_second : 0.0;
  }
  std::string describe() const;  // "1 Gbit/s, 200 us"
};

// "1Gbit,200us", "100Mbit,1ms", "1e9,0.0002" (bits per second, seconds): bandwidth suffixes
// Kbit, Mbit, Gbit (powers of 1000, per second); latency suffixes s, ms, us. Error otherwise.
SimLink parse_sim_link(const std::string& text);

struct Message {
  int source = -1;
  int tag = 0;
  std::vector<uint8_t> bytes;
};

struct LinkStats {
  int64_t messages_sent = 0;
  int64_t bytes_sent = 0;
  double wait_seconds = 0;  // blocked in recv (the simulated link's hold included)
  double sim_seconds = 0;   // the simulated link's delay of the messages sent (from send to arrival)
};

class Link {
 public:
  static constexpr int kAnySource = -1;
  virtual ~Link() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // Sends `bytes` to rank `to` without waiting for the receiver (messages between a pair
  // arrive in order); Error when an earlier send has not gone within the timeout.
  void send(int to, int tag, std::span<const uint8_t> bytes);
  // The next message from `from` (or any rank); Error naming `what` when none comes within
  // the timeout times `patience`.
  Message recv(int from, const std::string& what, double patience = 1.0);

  void set_timeout(double seconds) { timeout_seconds_ = seconds; }
  double timeout() const { return timeout_seconds_; }
  void set_sim_link(const SimLink& sim) { sim_ = sim; }
  const LinkStats& stats() const { return stats_; }

  // Waits until every message sent has left this process (before the job ends); Error after
  // the timeout.
  virtual void flush() {}

  // Ends every rank of the job now (after an error was printed): MPI_Abort.
  [[noreturn]] virtual void abort(int code) = 0;

 protected:
  // Takes the bytes (the caller's buffer may change right after) and returns; a send not
  // done within timeout_seconds is an Error at a later call.
  virtual void send_bytes(int to, int tag, std::span<const uint8_t> bytes, double timeout_seconds) = 0;
  virtual Message recv_bytes(int from, double timeout_seconds, const std::string& what) = 0;

 private:
  double timeout_seconds_ = 60;
  SimLink sim_;
  std::vector<double> link_free_at_;  // per receiver: when the simulated link is idle again
  std::vector<uint8_t> framed_;
  LinkStats stats_;
};

// True when this process was started by mpirun/mpiexec (OpenMPI, MPICH or a PMI launcher),
// with the job's size in `size`. Reads the environment only; MPI is not initialized.
bool launched_by_mpi(int& size);

// Joins the MPI job (MPI_Init; MPI_Finalize when the link is destroyed, unless an exception
// is unwinding: then the error is printed and abort_job_after_error ends every rank). Error
// when skiff was built without MPI.
std::unique_ptr<Link> open_mpi_link();

// For the CLI's error path: "rank N: " in a job with several ranks, else "".
std::string error_prefix();
// Ends every rank of the job (MPI_Abort) when this process joined one with several ranks
// and has not left it; otherwise returns (the caller exits as usual).
void abort_job_after_error(int code);

}  // namespace skiff::dist

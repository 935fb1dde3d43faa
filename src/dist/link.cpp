#include "dist/link.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "base/error.h"

namespace skiff::dist {

namespace {

// "<number><suffix>" with the suffix's multiplier from `units`; a bare number is `bare`.
double parse_quantity(const std::string& piece, const std::string& text, const char* what,
                      std::initializer_list<std::pair<const char*, double>> units) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(piece, &used);
  } catch (const std::logic_error&) {
    used = 0;
  }
  if (used == 0) fail("--sim-link '{}': '{}' is not a {}", text, piece, what);
  const std::string suffix = piece.substr(used);
  double scale = 0;
  for (const auto& [name, mult] : units)
    if (suffix == name) scale = mult;
  if (scale == 0) fail("--sim-link '{}': '{}' has an unknown unit '{}'", text, piece, suffix);
  v *= scale;
  if (!std::isfinite(v) || v < 0) fail("--sim-link '{}': '{}' must be a finite, non-negative {}", text, piece, what);
  return v;
}

}  // namespace

std::string SimLink::describe() const {
  if (!enabled()) return "off";
  return fmt::format("{:g} Mbit/s, {:g} us", bits_per_second / 1e6, latency_seconds * 1e6);
}

SimLink parse_sim_link(const std::string& text) {
  const size_t comma = text.find(',');
  if (comma == std::string::npos) fail("--sim-link '{}': expected BANDWIDTH,LATENCY (e.g. 1Gbit,200us)", text);
  SimLink link;
  link.bits_per_second = parse_quantity(text.substr(0, comma), text, "bandwidth",
                                        {{"", 1.0}, {"bit", 1.0}, {"Kbit", 1e3}, {"Mbit", 1e6}, {"Gbit", 1e9}});
  link.latency_seconds =
      parse_quantity(text.substr(comma + 1), text, "latency", {{"", 1.0}, {"s", 1.0}, {"ms", 1e-3}, {"us", 1e-6}});
  if (link.bits_per_second <= 0) fail("--sim-link '{}': the bandwidth must be positive", text);
  return link;
}

namespace {
double clock_seconds() {
  // steady_clock is CLOCK_MONOTONIC: one clock for every process on the host, which is
  // what the simulated link's arrival stamps need (a simulation on one host).
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

void Link::send(int to, int tag, std::span<const uint8_t> bytes) {
  ++stats_.messages_sent;
  stats_.bytes_sent += static_cast<int64_t>(bytes.size());
  if (!sim_.enabled()) {
    send_bytes(to, tag, bytes, timeout_seconds_);
    return;
  }
  // The message occupies the link to `to` for bytes/bandwidth after the previous one left
  // it, then travels for the latency; its arrival time rides along after the payload.
  if (link_free_at_.size() <= static_cast<size_t>(to)) link_free_at_.resize(static_cast<size_t>(to) + 1, 0.0);
  const double now = clock_seconds();
  double& free_at = link_free_at_[static_cast<size_t>(to)];
  free_at = std::max(free_at, now) + static_cast<double>(bytes.size()) * 8.0 / sim_.bits_per_second;
  const double arrival = free_at + sim_.latency_seconds;
  stats_.sim_seconds += arrival - now;
  framed_.assign(bytes.begin(), bytes.end());
  framed_.resize(bytes.size() + sizeof(double));
  std::memcpy(framed_.data() + bytes.size(), &arrival, sizeof(double));
  send_bytes(to, tag, framed_, timeout_seconds_);
}

Message Link::recv(int from, const std::string& what, double patience) {
  const auto start = std::chrono::steady_clock::now();
  Message m = recv_bytes(from, timeout_seconds_ * patience, what);
  if (sim_.enabled()) {
    if (m.bytes.size() < sizeof(double))
      fail("pipeline: a message from rank {} lacks the simulated link's arrival time (is --sim-link the same on every rank?)",
           m.source);
    double arrival = 0;
    std::memcpy(&arrival, m.bytes.data() + m.bytes.size() - sizeof(double), sizeof(double));
    m.bytes.resize(m.bytes.size() - sizeof(double));
    // Hold the message until it arrives: sleep most of the wait, yield through the last
    // 100 us (a sleep alone overshoots by the timer slack, large against 200 us latencies).
    const double wait = arrival - clock_seconds();
    if (wait > 150e-6) std::this_thread::sleep_for(std::chrono::duration<double>(wait - 100e-6));
    while (clock_seconds() < arrival) std::this_thread::yield();
  }
  stats_.wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return m;
}

bool launched_by_mpi(int& size) {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
    if (const char* v = std::getenv(name)) {
      size = std::atoi(v);
      return true;
    }
  }
  size = 1;
  return false;
}

}  // namespace skiff::dist

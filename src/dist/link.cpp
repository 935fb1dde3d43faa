#include "dist/link.h"

#include <chrono>
#include <cmath>
#include <cstdlib>
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

void Link::send(int to, int tag, std::span<const uint8_t> bytes) {
  const double delay = sim_.delay_seconds(bytes.size());
  if (delay > 0) {
    // Sleep most of it, yield through the last 100 us: a sleep alone overshoots by the
    // timer slack and the wake-up, which at 200 us latencies would be a large error.
    using Clock = std::chrono::steady_clock;
    const Clock::time_point until =
        Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(delay));
    if (delay > 150e-6) std::this_thread::sleep_until(until - std::chrono::microseconds(100));
    while (Clock::now() < until) std::this_thread::yield();
    stats_.sim_seconds += delay;
  }
  send_bytes(to, tag, bytes, timeout_seconds_);
  ++stats_.messages_sent;
  stats_.bytes_sent += static_cast<int64_t>(bytes.size());
}

Message Link::recv(int from, const std::string& what, double patience) {
  const auto start = std::chrono::steady_clock::now();
  Message m = recv_bytes(from, timeout_seconds_ * patience, what);
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

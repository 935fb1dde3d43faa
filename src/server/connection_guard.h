// Slow clients cannot hold the server's threads: a connection may spend at most `limit` in a
// row outside a request handler, that is sending its request line, headers and body (or
// idling between keep-alive requests). cpp-httplib only bounds each read (a client sending a
// byte every few seconds would hold a thread for hours), so a watchdog thread looks at the
// process's connected sockets on the server's port a few times a second and shuts down those
// past the limit; the blocked read then fails and httplib closes the connection.
// Handlers mark their connection busy with enter()/leave() (keyed by the peer's address).
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>

namespace skiff::server {

class ConnectionGuard {
 public:
  ConnectionGuard(std::chrono::milliseconds limit) : limit_(limit) {}
  ~ConnectionGuard() { stop(); }

  // Starts watching sockets bound to local port `port`.
  void start(int port);
  void stop();

  void enter(const std::string& peer_addr, int peer_port);
  void leave(const std::string& peer_addr, int peer_port);
  // Connections shut down so far.
  int64_t closed() const;
  // Whether the client of addr:port has closed its connection (or reset it). A non-streamed
  // request asks while it waits, since httplib 0.11 cannot tell before writing the answer.
  // Knows a connection from the watchdog's first scan after it opened (a fraction of a second).
  bool peer_closed(const std::string& peer_addr, int peer_port) const;

 private:
  using Clock = std::chrono::steady_clock;
  struct Conn {
    int busy = 0;             // handlers running on it
    Clock::time_point since;  // outside handlers since
    bool seen = false;        // found in the last scan
    int fd = -1;              // its socket, as of the last scan
  };
  void watch();

  const std::chrono::milliseconds limit_;
  int port_ = 0;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::map<std::string, Conn> conns_;  // "addr:port" of the peer
  int64_t closed_ = 0;
  std::thread thread_;
};

}  // namespace skiff::server

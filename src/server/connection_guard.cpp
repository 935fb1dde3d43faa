#include "server/connection_guard.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <poll.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include <fmt/format.h>

namespace skiff::server {

namespace {

// "addr:port" of a socket address, or "" for other families.
std::string address_key(const sockaddr_storage& a) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (a.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&a);
    inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf);
    return fmt::format("{}:{}", buf, ntohs(in->sin_port));
  }
  if (a.ss_family == AF_INET6) {
    const auto* in = reinterpret_cast<const sockaddr_in6*>(&a);
    inet_ntop(AF_INET6, &in->sin6_addr, buf, sizeof buf);
    return fmt::format("{}:{}", buf, ntohs(in->sin6_port));
  }
  return "";
}

int local_port(const sockaddr_storage& a) {
  if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&a)->sin_port);
  if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&a)->sin6_port);
  return -1;
}

// Connected sockets of this process on local `port`: fd and the peer's "addr:port".
std::vector<std::pair<int, std::string>> connections_on(int port) {
  std::vector<std::pair<int, std::string>> out;
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return out;
  while (dirent* e = readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (*end != '\0' || end == e->d_name) continue;
    struct stat st;
    if (fstat(static_cast<int>(fd), &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    sockaddr_storage local{}, peer{};
    socklen_t len = sizeof local;
    if (getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&local), &len) != 0) continue;
    if (local_port(local) != port) continue;
    len = sizeof peer;
    if (getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&peer), &len) != 0) continue;  // listener
    std::string key = address_key(peer);
    if (!key.empty()) out.emplace_back(static_cast<int>(fd), std::move(key));
  }
  closedir(dir);
  return out;
}

}  // namespace

void ConnectionGuard::start(int port) {
  port_ = port;
  thread_ = std::thread([this] { watch(); });
}

void ConnectionGuard::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void ConnectionGuard::enter(const std::string& addr, int port) {
  std::lock_guard lock(mutex_);
  Conn& c = conns_[fmt::format("{}:{}", addr, port)];
  ++c.busy;
}

void ConnectionGuard::leave(const std::string& addr, int port) {
  std::lock_guard lock(mutex_);
  auto it = conns_.find(fmt::format("{}:{}", addr, port));
  if (it == conns_.end()) return;
  if (it->second.busy > 0) --it->second.busy;
  it->second.since = Clock::now();
}

bool ConnectionGuard::peer_closed(const std::string& addr, int port) const {
  std::lock_guard lock(mutex_);  // held: the fd is httplib's, open while its handler runs
  auto it = conns_.find(fmt::format("{}:{}", addr, port));
  if (it == conns_.end() || it->second.fd < 0) return false;
  pollfd p{it->second.fd, POLLIN | POLLRDHUP, 0};
  if (::poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) return true;
  // Readable without a hang-up: bytes of a pipelined request, or an end of file that
  // POLLRDHUP did not report. Only a zero-byte peek is an end.
  char byte;
  return ::recv(it->second.fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

int64_t ConnectionGuard::closed() const {
  std::lock_guard lock(mutex_);
  return closed_;
}

void ConnectionGuard::watch() {
  const auto period = std::min(std::chrono::milliseconds(250), limit_ / 4 + std::chrono::milliseconds(1));
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    cv_.wait_for(lock, period, [&] { return stopping_; });
    if (stopping_) break;
    lock.unlock();
    const auto sockets = connections_on(port_);
    lock.lock();
    const auto now = Clock::now();
    for (auto& [key, c] : conns_) c.seen = false;
    for (const auto& [fd, key] : sockets) {
      auto [it, inserted] = conns_.try_emplace(key);
      Conn& c = it->second;
      if (inserted) c.since = now;
      c.seen = true;
      c.fd = fd;
      if (c.busy == 0 && now - c.since > limit_) {
        // shutdown, not close: the fd stays httplib's to close, so it cannot be reused under it.
        ::shutdown(fd, SHUT_RDWR);
        ++closed_;
        c.since = now;  // once is enough; the connection goes away
      }
    }
    for (auto it = conns_.begin(); it != conns_.end();) {
      if (!it->second.seen && it->second.busy == 0) it = conns_.erase(it);
      else ++it;
    }
  }
}

}  // namespace skiff::server

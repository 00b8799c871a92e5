#include "proxy/upstream_pool.hpp"

#include <sys/socket.h>

#include <cerrno>

namespace tollgate::proxy {

bool UpstreamConn::stale() {
  auto& sock = lowest().socket();
  if (!sock.is_open()) return true;
  // Closed or reset by the backend, or unsolicited bytes: not reusable.
  return peek_peer(sock.native_handle()) != PeerState::kQuiet;
}

std::unique_ptr<UpstreamConn> UpstreamPool::take(SteadyClock::time_point now,
                                                 std::int64_t& idle_gauge_delta) {
  while (!idle_.empty()) {
    auto c = std::move(idle_.back());
    idle_.pop_back();
    --idle_gauge_delta;
    if (now >= c->idle_until) continue;  // dropped: closes the socket
    // A peer closes idle connections after seconds, not milliseconds: skip the syscall for
    // connections that were busy a moment ago.
    if (now - c->idle_since > std::chrono::milliseconds(250) && c->stale()) continue;
    return c;
  }
  return nullptr;
}

bool UpstreamPool::put(std::unique_ptr<UpstreamConn> c, PoolLimits limits,
                       SteadyClock::time_point now) {
  if (idle_.size() >= limits.max_idle || c->buffer.size() != 0) return false;
  c->idle_since = now;
  c->idle_until = now + limits.max_age;
  idle_.push_back(std::move(c));
  return true;
}

std::size_t UpstreamPool::sweep(SteadyClock::time_point now) {
  auto before = idle_.size();
  std::erase_if(idle_, [now](const std::unique_ptr<UpstreamConn>& c) {
    return now >= c->idle_until || c->stale();
  });
  return before - idle_.size();
}

}  // namespace tollgate::proxy

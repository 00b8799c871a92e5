#pragma once
// Per-worker keep-alive pool of connections to one backend endpoint. Owner: one worker thread.
// A connection goes back to the pool only after a complete, well-framed response with nothing
// left unread; anything else (error, client gone, half-read body) closes it.

#include <chrono>
#include <memory>
#include <optional>
#include <variant>
#include <vector>

#include "proxy/deadline.hpp"
#include "proxy/dns.hpp"
#include "proxy/net.hpp"
#include "tollgate/metrics/stats.hpp"

namespace tollgate::proxy {

using SteadyClock = std::chrono::steady_clock;

struct UpstreamConn {
  template <typename... Args>
  explicit UpstreamConn(Args&&... args) : stream(std::forward<Args>(args)...) {
    buffer.reserve(16 * 1024);  // one read takes a whole small response
  }
  std::variant<PlainStream, TlsStream> stream;
  std::unique_ptr<Deadline> deadline;  // request I/O deadline (Beast's timers only for connect)
  beast::flat_buffer buffer;
  SteadyClock::time_point idle_since{};
  SteadyClock::time_point idle_until{};  // pooled: closed from then on (backends[].keepalive_idle)
  std::uint32_t uses = 0;

  PlainStream& lowest() {
    if (auto* p = std::get_if<PlainStream>(&stream)) return *p;
    return beast::get_lowest_layer(std::get<TlsStream>(stream));
  }
  /// True when the peer has closed (or sent unexpected bytes) while the connection sat idle.
  bool stale();
};

/// How a connection goes back to its pool: at most `max_idle` kept, each for `max_age` at most.
struct PoolLimits {
  std::size_t max_idle = 0;
  std::chrono::milliseconds max_age{};
};

class UpstreamPool {
 public:
  /// A usable idle connection, or null. Drops stale and too-old ones.
  std::unique_ptr<UpstreamConn> take(SteadyClock::time_point now, std::int64_t& idle_gauge_delta);
  /// Keeps `c` for reuse unless the pool already holds `limits.max_idle` connections.
  bool put(std::unique_ptr<UpstreamConn> c, PoolLimits limits, SteadyClock::time_point now);
  /// Closes the idle connections that are too old or that the backend closed (they would sit
  /// in CLOSE_WAIT until the next take). Returns how many were closed.
  std::size_t sweep(SteadyClock::time_point now);

 private:
  std::vector<std::unique_ptr<UpstreamConn>> idle_;  // most recently used last
};

/// A worker's pools, one per upstream endpoint identity (pool ids are stable across reloads).
/// Owner: one worker thread.
class UpstreamPools {
 public:
  /// The pool with `id`, created on first use.
  UpstreamPool& get(std::uint32_t id) {
    if (id >= pools_.size()) pools_.resize(id + 1);
    auto& p = pools_[id];
    if (!p) p = std::make_unique<UpstreamPool>();
    return *p;
  }
  void reserve(std::size_t count) {
    if (pools_.size() < count) pools_.resize(count);
  }
  void clear() { pools_.clear(); }
  /// UpstreamPool::sweep over every pool. Returns how many connections were closed.
  std::size_t sweep(SteadyClock::time_point now) {
    std::size_t closed = 0;
    for (auto& p : pools_) {
      if (p) closed += p->sweep(now);
    }
    return closed;
  }

 private:
  std::vector<std::unique_ptr<UpstreamPool>> pools_;
};

/// What an attempt needs of its worker: the statistics, the upstream connection pools, and how
/// long a write to the client may take. Owner: the worker; lives as long as it.
struct UpstreamEnv {
  metrics::WorkerStats& stats;
  UpstreamPools& pools;
  Resolver& resolver;  // the worker's DNS resolver and cache
  std::chrono::milliseconds client_write_timeout;  // server.limits.idle_timeout
};

}  // namespace tollgate::proxy

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
#include "proxy/net.hpp"

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
  std::uint32_t uses = 0;

  PlainStream& lowest() {
    if (auto* p = std::get_if<PlainStream>(&stream)) return *p;
    return beast::get_lowest_layer(std::get<TlsStream>(stream));
  }
  /// True when the peer has closed (or sent unexpected bytes) while the connection sat idle.
  bool stale();
};

class UpstreamPool {
 public:
  /// A usable idle connection, or null. Drops stale and too-old ones.
  std::unique_ptr<UpstreamConn> take(SteadyClock::time_point now, std::chrono::milliseconds max_age,
                                     std::int64_t& idle_gauge_delta);
  /// Keeps `c` for reuse unless the pool already holds `max_idle` connections.
  bool put(std::unique_ptr<UpstreamConn> c, std::size_t max_idle, SteadyClock::time_point now);

  /// Cached DNS answer (re-resolved after 30 s).
  std::optional<tcp::resolver::results_type> resolved;
  SteadyClock::time_point resolved_at{};

 private:
  std::vector<std::unique_ptr<UpstreamConn>> idle_;  // most recently used last
};

}  // namespace tollgate::proxy

#pragma once
// Opening a connection to an upstream (a backend, a health-check target, a JWKS or token
// endpoint): the one place that resolves, connects and does the client side of TLS.

#include <boost/system/result.hpp>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "proxy/dns.hpp"
#include "proxy/net.hpp"
#include "tollgate/metrics/stats.hpp"

namespace tollgate::proxy {

/// A connected upstream: plain TCP, or TLS after a verified handshake.
using UpstreamStream = std::variant<PlainStream, TlsStream>;

/// The step at which opening a connection failed.
enum class ConnectStep : std::uint8_t { kResolve, kConnect, kTls };
std::string_view to_string(ConnectStep s);

/// Why a connection could not be opened: the step and the error it ended with.
struct ConnectError {
  ConnectStep step = ConnectStep::kConnect;
  boost::system::error_code ec;

  /// The step ran out of time (the error is a timeout, not a refusal).
  bool timed_out() const;
  /// "<step>: <error message>", for logs (never contains secrets).
  std::string message() const;
};

/// The data path's name for `e` (counted in tollgate_upstream_errors_total).
metrics::UpstreamError to_upstream_error(const ConnectError& e);

/// Where to connect and how.
struct UpstreamTarget {
  std::string_view host{};  // a DNS name or an IP literal (IPv6 without brackets)
  std::uint16_t port = 0;
  net::ssl::context* tls = nullptr;    // null: plain TCP; else TLS with this client context
  std::chrono::milliseconds timeout{};  // bounds each step after the lookup: TCP connect, TLS handshake
  std::chrono::milliseconds resolve_timeout{};  // bounds the DNS lookup (a cached answer: none)
  // When set, no step runs past it either (a caller bounding a whole exchange).
  std::optional<std::chrono::steady_clock::time_point> deadline{};

  /// When a step starting now and allowed `step` must end.
  std::chrono::steady_clock::time_point step_end(std::chrono::milliseconds step) const;
};

/// Opens a connection to `target`: resolves the name with `resolver` (its cache, or a lookup
/// bounded by the resolve timeout), connects over TCP (TCP_NODELAY set), then, when `target.tls`
/// is set, performs the TLS handshake with SNI (for names, not IP literals), peer verification
/// and host name verification. A failed TCP connect makes the resolver forget the name's
/// answer. The returned stream has no expiry set.
/// Thread: the calling coroutine's executor, which must be `resolver`'s. `target`'s strings
/// and `resolver` must outlive the call. Errors are values (never throws on network failure).
net::awaitable<boost::system::result<UpstreamStream, ConnectError>> connect_upstream(
    UpstreamTarget target, Resolver& resolver);

}  // namespace tollgate::proxy

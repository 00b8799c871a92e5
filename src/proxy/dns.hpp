#pragma once
// Name resolution for every upstream (backends, health probes, JWKS and token endpoints): c-ares
// on the caller's event loop (no thread per lookup, so a timeout really ends the wait), with a
// cache that keeps each answer for its DNS TTL clamped to [min_ttl, max_ttl], and serves the last
// good answer when a refresh fails (RFC 8767) rather than failing every request while the DNS
// server is down.
// Thread: one Resolver belongs to one event loop (a worker's, or the control thread's); every
// call must run on its executor. Lifetime: it must outlive every resolve() it started (the
// gateway destroys workers after their loops stopped).

#include <boost/system/error_code.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/net.hpp"
#include "tollgate/config/config.hpp"

namespace tollgate::proxy {

/// How names are resolved (config `dns`, see config::DnsConfig).
struct DnsSettings {
  std::chrono::milliseconds min_ttl{1'000};    // an answer is kept at least this long
  std::chrono::milliseconds max_ttl{300'000};  // and at most this long, whatever its TTL
  std::vector<std::string> servers;  // "ip", "ip:port", "[ipv6]:port"; empty: /etc/resolv.conf
};
inline DnsSettings dns_settings(const config::DnsConfig& c) { return {c.min_ttl, c.max_ttl, c.servers}; }

using Endpoints = std::vector<tcp::endpoint>;

class Resolver {
 public:
  Resolver(net::any_io_executor executor, DnsSettings settings);
  ~Resolver();
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  /// The addresses of `host` (a name or an IP literal, IPv6 without brackets) with `port`: from
  /// the cache while fresh, else looked up, waiting until `deadline` at most (then
  /// net::error::timed_out). Errors: net::error::host_not_found, timed_out, or another
  /// resolver error.
  net::awaitable<std::pair<boost::system::error_code, Endpoints>> resolve(
      std::string_view host, std::uint16_t port, std::chrono::steady_clock::time_point deadline);

  /// Drops the cached answer for `host` (connecting to its addresses failed): the next resolve
  /// looks it up again.
  void forget(std::string_view host);

  /// Lookups sent to the DNS (not answered from the cache), for tests and metrics.
  std::uint64_t lookups() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace tollgate::proxy

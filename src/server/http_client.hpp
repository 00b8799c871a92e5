#pragma once
// A small HTTP/1.1 client for the control thread's own calls (JWKS documents, Entra ID and
// managed-identity tokens): one request per connection, TLS with host name verification, every
// step bounded by one timeout. Not used on the request path.

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "proxy/dns.hpp"

namespace tollgate::server {

struct FetchRequest {
  std::string method = "GET";
  std::string url;  // http:// or https://
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string ca_file;  // https: replaces the system trust store when set
  std::chrono::milliseconds timeout{10'000};
};

struct FetchResult {
  int status = 0;     // 0: no response (see error)
  std::string body;   // at most 1 MiB
  std::string error;  // transport problem, for logs (never contains secrets)
};

/// Performs `req`, resolving its host with `resolver` (the calling loop's; lookups bounded by
/// `resolve_timeout` and by the request's timeout). Thread: the calling io_context's thread,
/// which is `resolver`'s. Never throws.
boost::asio::awaitable<FetchResult> fetch(FetchRequest req, proxy::Resolver& resolver,
                                          std::chrono::milliseconds resolve_timeout);

/// application/x-www-form-urlencoded encoding of one value.
std::string form_encode(std::string_view value);

}  // namespace tollgate::server

#pragma once
// One generation of the configuration plus what the network layer derives from it (TLS contexts,
// metrics series ids, upstream pool ids). Immutable once published; each request pins the
// snapshot it started with (shared_ptr), so a reload never changes a running request.

#include <boost/asio/ssl/context.hpp>
#include <cstdint>
#include <memory>
#include <vector>

#include "tollgate/config/config.hpp"

namespace tollgate::server {

struct BackendRuntime {
  const config::BackendConfig* config = nullptr;
  std::shared_ptr<boost::asio::ssl::context> tls;  // null for http:// backends
  std::uint32_t pool_id = 0;  // per-worker upstream pool (stable across reloads per endpoint)
};

struct Snapshot {
  std::shared_ptr<const config::Config> config;
  std::vector<BackendRuntime> backends;  // parallel to config->backends
  // series_[deployment][pool][k]: metrics series of (deployment, that backend)
  std::vector<std::vector<std::vector<std::uint32_t>>> route_series;
  std::uint32_t unrouted_series = 0;             // ("none", "none")
  std::uint32_t pool_count = 0;
  std::uint64_t generation = 0;
};

}  // namespace tollgate::server

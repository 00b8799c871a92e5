#pragma once
// The gateway process: workers, the control thread (signals, reload, drain, admin listener).

#include <memory>
#include <optional>
#include <string>

#include "tollgate/config/config.hpp"

namespace tollgate::server {

/// What would stop the gateway at start-up that the config loader does not check: the files
/// TLS to Redis needs (cluster.redis.ca_file must load as PEM). "<file>: <key>: <problem>", or
/// nullopt. Run by --check-config and before start-up.
std::optional<std::string> startup_problem(const config::Config& cfg);

class Gateway {
 public:
  /// `config_path` is re-read on SIGHUP. Throws std::runtime_error when listeners or TLS files
  /// cannot be set up (start-up only).
  Gateway(std::string config_path, std::shared_ptr<const config::Config> config);
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  /// Runs until SIGTERM/SIGINT and the drain finish. Returns the process exit code.
  int run();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tollgate::server

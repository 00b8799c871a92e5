#pragma once
// Identities on the control thread: the keys file and the admin API's key operations, the JWT
// issuers' key sets (fetched, refreshed, re-fetched on an unknown kid) and the Entra ID tokens
// the gateway obtains for its backends. Publishes an AuthState to the workers on every change.

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <prometheus/metric_family.h>

#include "cluster/key_sync.hpp"
#include "proxy/dns.hpp"
#include "server/admin.hpp"
#include "server/runtime.hpp"
#include "tollgate/metrics/stats.hpp"

namespace tollgate::server {

class IdentityManager {
 public:
  using Publish = std::function<void(std::shared_ptr<const AuthState>)>;
  /// `admin_loopback`: the admin listener (bound at start-up, not moved by reloads) is on a
  /// loopback address.
  /// `resolver`: the control thread's, for JWKS and token endpoints; outlives the manager.
  IdentityManager(boost::asio::io_context& io, proxy::Resolver& resolver,
                  metrics::SeriesRegistry& series, Publish publish, bool admin_loopback,
                  ratelimit::BucketRegistry& buckets, ratelimit::BudgetRegistry& budgets);
  ~IdentityManager();

  /// The token slot of a backend that uses Entra ID / managed identity (kept across reloads
  /// while its credential settings stay the same). Thread: control.
  std::shared_ptr<TokenSlot> token_slot(const config::BackendConfig& b);

  /// Adopts a configuration: reads the keys file, (re)starts JWKS and token refreshers, and
  /// publishes. Throws std::runtime_error when the keys file is unreadable or malformed (at
  /// start-up the gateway refuses to start; a reload keeps the running identities).
  std::shared_ptr<const AuthState> apply(std::shared_ptr<const config::Config> cfg,
                                         const Snapshot& snap);
  /// True once every JWT issuer's keys and every backend token were obtained at least once.
  /// Thread: control.
  bool keys_ready() const;
  const std::shared_ptr<const AuthState>& state() const { return state_; }
  /// A worker met a token whose kid `issuer`'s JWKS lacks: refresh it (at most once a second).
  void unknown_kid(std::size_t issuer);
  /// /admin/* requests. Thread: control.
  AdminResponse admin(const AdminRequest& req);
  /// The admin API's access check: an answer (404 disabled, 401) when `req` may not use it.
  std::optional<AdminResponse> refuse_admin(const AdminRequest& req) const;
  /// Identity metrics, and the fill of every admission bucket and budget (clients', tenants',
  /// and `snap`'s deployments'). Thread: control.
  void families(std::vector<prometheus::MetricFamily>& out, const Snapshot* snap) const;
  void stop();

  /// With `cluster`: runtime keys and revocations are shared through `sync`, which hears of every
  /// local change (admin API, reload) and hands back merges (adopt_keys). Thread: control.
  void share_keys(std::shared_ptr<cluster::KeySync> sync) { key_sync_ = std::move(sync); }
  /// The keys file's contents as this replica holds them. Thread: control.
  const auth::KeysFile& keys_file() const { return keys_file_; }
  /// Replaces them with a merge of the shared keys: saved to the keys file (kept in memory when
  /// it cannot be written: a revocation must not wait for a disk), the index rebuilt and
  /// published. Thread: control.
  void adopt_keys(auth::KeysFile merged);

  struct Loop;

 private:
  void publish();
  static boost::asio::awaitable<void> jwks_loop(IdentityManager* self, std::shared_ptr<Loop> loop);
  AdminResponse keys_of(const std::string& client);
  AdminResponse create_key(const std::string& client, std::string_view body);
  AdminResponse revoke_key(const std::string& id);

  boost::asio::io_context& io_;
  proxy::Resolver& resolver_;
  metrics::SeriesRegistry& series_;
  Publish publish_;
  bool admin_loopback_;
  ratelimit::BucketRegistry& buckets_;
  ratelimit::BudgetRegistry& budgets_;
  std::shared_ptr<const config::Config> config_;            // owner: control
  auth::KeysFile keys_file_;                                // owner: control
  std::shared_ptr<const AuthState> state_;                  // owner: control
  std::vector<std::shared_ptr<const auth::Jwks>> jwks_;     // parallel to config_->auth.jwt
  std::vector<std::shared_ptr<Loop>> jwks_loops_;           // parallel to config_->auth.jwt
  std::unordered_map<std::string, std::shared_ptr<TokenSlot>> token_slots_;  // identity -> slot
  std::unordered_map<std::string, std::shared_ptr<Loop>> token_loops_;       // identity -> loop
  std::uint64_t jwks_fetch_failures_ = 0;
  std::shared_ptr<cluster::KeySync> key_sync_;               // with cluster; owner: control
};

}  // namespace tollgate::server

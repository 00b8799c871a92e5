#pragma once
// A worker: one thread, one io_context, its own acceptors (SO_REUSEPORT), upstream connection
// pools and statistics. Nothing here is touched by another thread except through post() and the
// relaxed atomics in WorkerStats. See docs/architecture.md.

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <functional>
#include <atomic>
#include <list>
#include <memory>
#include <thread>
#include <vector>

#include "cluster/shared_limiter.hpp"
#include "cluster/shared_objects.hpp"
#include "proxy/upstream_pool.hpp"
#include "server/body_budget.hpp"
#include "server/connections.hpp"
#include "server/pipeline/finish.hpp"
#include "server/runtime.hpp"
#include "tollgate/core/clock.hpp"
#include "tollgate/routing/balancer.hpp"
#include "tollgate/metrics/logging.hpp"
#include "tollgate/metrics/stats.hpp"

namespace tollgate::usage {
class Ledger;
}

namespace tollgate::server {

struct Listener {
  boost::asio::ip::tcp::acceptor acceptor;
  std::shared_ptr<boost::asio::ssl::context> tls;  // null: plain HTTP
};

class Worker {
 public:
  /// `connections` (shared by the workers) outlives the worker.
  Worker(unsigned index, std::shared_ptr<metrics::AccessLog> access_log,
         SharedConnections& connections);
  ~Worker();

  boost::asio::io_context& io() { return io_; }
  unsigned index() const { return index_; }
  metrics::WorkerStats& stats() { return stats_; }
  metrics::AccessLog& access_log() { return *access_log_; }
  /// Per-address connection counts and accept failures, shared by the workers. Thread: any.
  SharedConnections& connections() { return connections_; }
  /// The usage ledger (null when none is configured). Set before start().
  usage::Ledger* ledger() { return ledger_.get(); }
  void set_ledger(std::shared_ptr<usage::Ledger> ledger) { ledger_ = std::move(ledger); }
  /// The gateway's bound on request bodies held in memory. Set before start().
  BodyBudget& body_budget() { return *body_budget_; }
  void set_body_budget(std::shared_ptr<BodyBudget> budget) { body_budget_ = std::move(budget); }

  /// Thread: control thread before start().
  void add_listener(boost::asio::ip::tcp::acceptor acceptor,
                    std::shared_ptr<boost::asio::ssl::context> tls);
  void start(std::shared_ptr<const Snapshot> snapshot, std::shared_ptr<const AuthState> auth);
  void join();

  /// Thread: any. Posts the new snapshot to the worker.
  void publish(std::shared_ptr<const Snapshot> snapshot);
  /// Thread: any. Posts new identities (keys, JWKS) to the worker.
  void publish_auth(std::shared_ptr<const AuthState> auth);
  /// Thread: control, before start(). Called (on the worker thread) when a token names a key id
  /// its issuer's JWKS lacks; the control thread refreshes that JWKS (rate-limited).
  void on_unknown_kid(std::function<void(std::size_t issuer)> f) { unknown_kid_ = std::move(f); }
  /// Thread: any. Stops accepting, closes idle connections, lets running requests finish.
  void begin_drain();
  /// Thread: any. Stops the event loop (after the drain).
  void stop();

  // --- worker thread only ---
  const std::shared_ptr<const Snapshot>& snapshot() const { return snapshot_; }
  const std::shared_ptr<const AuthState>& auth() const { return auth_; }
  void unknown_kid(std::size_t issuer) {
    if (unknown_kid_) unknown_kid_(issuer);
  }
  bool draining() const { return draining_; }
  routing::Rng& rng() { return rng_; }
  /// The clocks the request pipeline reads (the system's; tests of the pipeline inject theirs).
  const core::Clock& clock() const { return core::system_clock(); }
  /// Where finished requests are recorded.
  pipeline::FinishEnv finish_env() { return {stats_, ledger_.get(), *access_log_, clock(), shared_.get()}; }
  /// The shared limits of a cluster (null: none configured). Made in start().
  cluster::SharedLimiter* shared_limiter() { return shared_.get(); }
  /// The cluster's stored-object owners (null: none), on the limiter's connection; bound to
  /// this worker's thread for the affinity table's journal (cluster::ObjectJournal).
  cluster::SharedObjects* shared_objects() { return objects_.get(); }
  /// Thread: control, before start(). The replicas seen in the cluster lately (a local
  /// fallback's share of each limit), kept by the gateway's heartbeat.
  void set_replicas(std::shared_ptr<std::atomic<std::size_t>> seen) { replicas_ = std::move(seen); }
  core::TimeMs& shared_logged_ms() { return shared_logged_ms_; }  // admit_shared's last log line
  std::size_t replicas_seen() const { return replicas_ ? std::max<std::size_t>(1, replicas_->load(std::memory_order_relaxed)) : 1; }
  /// What the forwarder needs of this worker.
  proxy::UpstreamEnv upstream_env() {
    return {stats_, pools_, *resolver_, snapshot_->config->server.limits.idle_timeout};
  }
  proxy::Resolver& resolver() { return *resolver_; }

  /// Registry of open client sessions, so a drain can close the idle ones.
  struct SessionEntry {
    bool idle = true;
    std::function<void()> close;
  };
  std::list<SessionEntry>::iterator register_session(std::function<void()> close);
  void unregister_session(std::list<SessionEntry>::iterator it);

  /// Closes expired or peer-closed idle upstream connections; returns how many.
  std::size_t sweep_pools(std::chrono::steady_clock::time_point now) { return pools_.sweep(now); }

 private:
  void apply(std::shared_ptr<const Snapshot> snapshot);
  void accept_loop(Listener& l);
  void sweep_loop();  // closes idle upstream connections that expired or were closed by the peer

  // Destruction order matters: ~Worker closes listeners and pooled connections, then io_ is
  // destroyed before everything declared above it, because destroying io_ destroys suspended
  // session coroutines whose cleanup still uses sessions_, stats_ and the snapshot.
  unsigned index_;
  metrics::WorkerStats stats_;
  std::shared_ptr<metrics::AccessLog> access_log_;
  SharedConnections& connections_;
  std::shared_ptr<usage::Ledger> ledger_;
  std::shared_ptr<cluster::SharedLimiter> shared_;  // the cluster's limits (null: none)
  std::shared_ptr<cluster::SharedObjects> objects_;  // its object owners (null: none)
  std::shared_ptr<std::atomic<std::size_t>> replicas_;  // kept by worker 0's heartbeat
  core::TimeMs shared_logged_ms_ = 0;
  std::shared_ptr<BodyBudget> body_budget_;
  std::unique_ptr<proxy::Resolver> resolver_;  // made in start() (dns settings), on io_
  std::shared_ptr<const Snapshot> snapshot_;         // owner: worker thread
  std::shared_ptr<const AuthState> auth_;            // owner: worker thread
  std::function<void(std::size_t)> unknown_kid_;     // set before start
  std::list<SessionEntry> sessions_;                 // owner: worker thread
  bool draining_ = false;                            // owner: worker thread
  routing::Rng rng_;                                 // owner: worker thread
  boost::asio::io_context io_{1};
  std::vector<std::unique_ptr<Listener>> listeners_;
  proxy::UpstreamPools pools_;  // owner: worker thread
  std::thread thread_;
};

}  // namespace tollgate::server

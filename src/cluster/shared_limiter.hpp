#pragma once
// A worker's door to the shared limits: admits a request from the worker's leases, or reserves
// it in Redis (awaited by the admit_shared stage); settles holds into the leases when requests
// end, and flushes what the leases owe the store in the background, one flush at a time, sent
// again until the store has it, so budgets see every use, including what replicas admitted on
// their own while the store was away.
//
// Thread: the worker's executor (the RedisClient's). Lifetime: the worker's; close() before it
// goes (replays in flight end with the client).

#include <atomic>
#include <cstddef>
#include <deque>
#include <memory>
#include <optional>
#include <variant>

#include <boost/asio/steady_timer.hpp>

#include "cluster/lease_book.hpp"
#include "cluster/redis_client.hpp"
#include "cluster/shared_hold.hpp"
#include "cluster/shared_limits.hpp"
#include "tollgate/metrics/stats.hpp"

namespace tollgate::cluster {

class SharedLimiter final : public Settler, public std::enable_shared_from_this<SharedLimiter> {
 public:
  /// Grant releases kept while the store is away; beyond this the oldest are dropped (and logged).
  static constexpr std::size_t kMaxUnsettled = 100'000;

  /// `stats`: the worker's cells (cluster_unsettled); outlives the limiter.
  SharedLimiter(std::shared_ptr<RedisClient> redis, std::string key_prefix, LeaseTerms terms,
                metrics::WorkerStats& stats);

  /// Admits `d` from this worker's leases, without a round trip, if they hold enough.
  std::optional<ReserveOutcome> take(const Demand& d, ratelimit::UnixMs now) { return book_.take(d, now); }
  /// Reserves `d` in the store, with top-ups of this worker's leases.
  net::awaitable<ReserveOutcome> reserve(const Demand& d, ratelimit::UnixMs now);
  void settle(SharedHold hold, std::int64_t tokens, std::int64_t nano_usd) override;
  /// Starts the flusher: it sends what the leases owe the store soon after requests end, and
  /// gives back leases past their ttl.
  void start();
  /// Gives every lease back now and leases nothing more (the process is stopping).
  void drain();
  /// Marks this replica seen every few seconds and keeps `seen` at the number of replicas seen in
  /// the last minute (one worker's limiter does it for the process).
  void heartbeat(std::string replica_id, std::shared_ptr<std::atomic<std::size_t>> seen);
  /// Leases holding units, use not yet flushed, flushes and releases not yet applied: what a
  /// drain waits for. While draining with the store away, only use and debt (units given back
  /// cannot reach it, and a lease's units in a store that is away matter to no one until it returns).
  std::size_t unsettled() const;
  const std::shared_ptr<RedisClient>& redis() const { return redis_; }

 private:
  struct Release {
    std::string demand_id;  // a grant whose reply was lost
  };
  struct Pending {
    std::variant<Flush, Release> what;
    int attempts = 0;
  };
  static net::awaitable<void> run(std::shared_ptr<SharedLimiter> self);
  static net::awaitable<void> beat(std::shared_ptr<SharedLimiter> self, std::string id,
                                   std::shared_ptr<std::atomic<std::size_t>> seen);
  net::awaitable<bool> apply(Pending& p);
  void keep(Pending p);
  void report();

  std::shared_ptr<RedisClient> redis_;
  metrics::WorkerStats& stats_;
  LimitKeys keys_;
  std::string prefix_;
  std::string seq_key_;  // this limiter's flush sequence
  LeaseBook book_;
  std::deque<Pending> pending_;  // flushes and releases to apply, oldest first (one flush at a time)
  net::steady_timer wake_;
  std::int64_t reported_ = 0;  // what cluster_unsettled holds of this limiter
  bool draining_ = false;
  bool idle_ = false;     // the flusher waits for its next round (a settle may wake it)
  bool failing_ = false;  // the store failed the last attempt (the flusher waits kReplayPause)
  std::size_t dropped_ = 0;
};

/// A worker's limiter of the `cluster` config: its own Redis connection on `ex`, started, its
/// round trips, failures and state counted in `stats` (the worker's cells, on `ex`'s thread).
/// Null (logged) when the connection cannot be set up (the CA file cannot be loaded).
std::shared_ptr<SharedLimiter> make_shared_limiter(net::any_io_executor ex, const config::ClusterConfig& c,
                                                   metrics::WorkerStats& stats);

}  // namespace tollgate::cluster

#pragma once
// A worker's door to the shared limits: reserves a request's demand in Redis (awaited by the
// admit_shared stage) and settles holds when requests end, without making them wait. A settle
// that fails is kept (bounded) and replayed once the store answers again, so budgets see every
// use, including what replicas admitted on their own while the store was away.
//
// Thread: the worker's executor (the RedisClient's). Lifetime: the worker's; close() before it
// goes (replays in flight end with the client).

#include <atomic>
#include <cstddef>
#include <deque>
#include <memory>

#include "cluster/redis_client.hpp"
#include "cluster/shared_hold.hpp"
#include "cluster/shared_limits.hpp"
#include "tollgate/metrics/stats.hpp"

namespace tollgate::cluster {

class SharedLimiter final : public Settler, public std::enable_shared_from_this<SharedLimiter> {
 public:
  /// Settlements kept while the store is away; beyond this the oldest are dropped (and logged).
  static constexpr std::size_t kMaxUnsettled = 100'000;

  /// `stats`: the worker's cells (cluster_unsettled); outlives the limiter.
  SharedLimiter(std::shared_ptr<RedisClient> redis, std::string key_prefix, metrics::WorkerStats& stats);

  net::awaitable<ReserveOutcome> reserve(const Demand& d, ratelimit::UnixMs now);
  void settle(SharedHold hold, std::int64_t tokens, std::int64_t nano_usd) override;
  /// Marks this replica seen every few seconds and keeps `seen` at the number of replicas seen in
  /// the last minute (one worker's limiter does it for the process).
  void heartbeat(std::string replica_id, std::shared_ptr<std::atomic<std::size_t>> seen);
  std::size_t unsettled() const { return unsettled_.size(); }
  const std::shared_ptr<RedisClient>& redis() const { return redis_; }

 private:
  struct Unsettled {
    SharedHold hold;
    std::int64_t tokens = 0, nano_usd = 0;
    int attempts = 0;
  };
  static net::awaitable<void> run_settle(std::shared_ptr<SharedLimiter> self, Unsettled u);
  static net::awaitable<void> replay(std::shared_ptr<SharedLimiter> self);
  static net::awaitable<void> beat(std::shared_ptr<SharedLimiter> self, std::string id,
                                   std::shared_ptr<std::atomic<std::size_t>> seen);
  void keep(Unsettled u);

  std::shared_ptr<RedisClient> redis_;
  metrics::WorkerStats& stats_;
  LimitKeys keys_;
  std::string prefix_;
  std::deque<Unsettled> unsettled_;  // failed settlements, oldest first
  bool replaying_ = false;
  std::size_t dropped_ = 0;
};

/// A worker's limiter of the `cluster` config: its own Redis connection on `ex`, started, its
/// round trips, failures and state counted in `stats` (the worker's cells, on `ex`'s thread).
/// Null (logged) when the connection cannot be set up (the CA file cannot be loaded).
std::shared_ptr<SharedLimiter> make_shared_limiter(net::any_io_executor ex, const config::ClusterConfig& c,
                                                   metrics::WorkerStats& stats);

}  // namespace tollgate::cluster

#include "cluster/shared_limiter.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>

#include "cluster/cluster_options.hpp"
#include "cluster/limit_scripts.hpp"
#include "tollgate/metrics/logging.hpp"

namespace tollgate::cluster {

namespace {

constexpr std::chrono::milliseconds kReplayPause{500};  // between replay rounds while it fails
constexpr std::chrono::milliseconds kHeartbeatEvery{5000};
constexpr std::chrono::milliseconds kHeartbeatRetry{250};  // while Redis is away
constexpr int kMaxAttempts = 100;  // replays of one settlement while the store is up (~50 s)

void log_crossed(const std::vector<ratelimit::BudgetLimit>& crossed) {
  for (const auto& b : crossed) {
    core::JsonFields f;
    f.add("scope", ratelimit::to_string(b.scope))
        .add("name", b.name)
        .add("period", ratelimit::to_string(b.period))
        .add("unit", ratelimit::to_string(b.measure))
        .add("limit", b.limit)
        .add("shared", true);
    metrics::log_warn("budget warning level reached", f);
  }
}

metrics::RedisError label(RedisFailure f) {
  switch (f) {
    case RedisFailure::kTimeout: return metrics::RedisError::kTimeout;
    case RedisFailure::kConnect: return metrics::RedisError::kConnect;
    case RedisFailure::kTls: return metrics::RedisError::kTls;
    case RedisFailure::kAuth: return metrics::RedisError::kAuth;
    case RedisFailure::kClosed: return metrics::RedisError::kClosed;
    case RedisFailure::kProtocol: return metrics::RedisError::kProtocol;
    case RedisFailure::kOverloaded: return metrics::RedisError::kOverloaded;
  }
  return metrics::RedisError::kProtocol;
}

/// The worker's cells as the Redis client reports to them (on the worker's thread).
class StatsObserver final : public RedisObserver {
 public:
  explicit StatsObserver(metrics::WorkerStats& stats) : stats_(stats) {}
  void on_round_trip(std::chrono::nanoseconds rtt) override {
    stats_.cluster_round_trip.observe_micros(std::chrono::duration_cast<std::chrono::microseconds>(rtt).count());
  }
  void on_failure(RedisFailure why) override { stats_.cluster_failures[label(why)].add(); }
  void on_up(bool up) override {
    if (up != up_) stats_.cluster_up.add(up ? 1 : -1);
    up_ = up;
    log_state(up);
  }

 private:
  static void log_state(bool up) {
    if (up) {
      metrics::log_info("cluster: connected to Redis");
    } else {
      metrics::log_warn("cluster: the connection to Redis is down; it is retried");
    }
  }
  metrics::WorkerStats& stats_;
  bool up_ = false;
};

}  // namespace

std::shared_ptr<SharedLimiter> make_shared_limiter(net::any_io_executor ex, const config::ClusterConfig& c,
                                                   metrics::WorkerStats& stats) {
  RedisClientOptions o;
  o.observer = std::make_shared<StatsObserver>(stats);
  o.connect = connect_options(c);
  o.timeout = c.timeout;
  auto client = RedisClient::create(std::move(ex), std::move(o));
  if (!client) {
    metrics::log_error("cluster: cannot set up the Redis connection",
                       core::JsonFields{}.add("redis", config::display_url(c.redis)).add("error", client.error().message()));
    return nullptr;
  }
  (*client)->start();
  return std::make_shared<SharedLimiter>(*client, c.key_prefix, stats);
}

SharedLimiter::SharedLimiter(std::shared_ptr<RedisClient> redis, std::string key_prefix,
                             metrics::WorkerStats& stats)
    : redis_(std::move(redis)), stats_(stats), keys_(key_prefix), prefix_(std::move(key_prefix)) {}

void SharedLimiter::heartbeat(std::string replica_id, std::shared_ptr<std::atomic<std::size_t>> seen) {
  net::co_spawn(redis_->executor(), beat(shared_from_this(), std::move(replica_id), std::move(seen)), net::detached);
}

net::awaitable<void> SharedLimiter::beat(std::shared_ptr<SharedLimiter> self, std::string id,
                                         std::shared_ptr<std::atomic<std::size_t>> seen) {
  static const RedisScript script{std::string(kHeartbeatScript)};
  net::steady_timer pause(self->redis_->executor());
  auto key = self->prefix_ + "replicas";
  while (!self->redis_->closed()) {
    bool beat = false;
    if (self->redis_->up()) {
      std::string_view keys[] = {key};
      std::string_view args[] = {id};
      auto r = co_await self->redis_->eval(script, keys, args);
      beat = r.ok() && r.reply.kind == RedisReply::Kind::kInteger && r.reply.integer > 0;
      if (beat) seen->store(static_cast<std::size_t>(r.reply.integer), std::memory_order_relaxed);
    }
    pause.expires_after(beat ? kHeartbeatEvery : kHeartbeatRetry);
    co_await pause.async_wait(net::as_tuple(net::use_awaitable));
  }
}

net::awaitable<ReserveOutcome> SharedLimiter::reserve(const Demand& d, ratelimit::UnixMs now) {
  auto out = co_await reserve_shared(*redis_, keys_, d, now);
  // A reserve whose reply did not come in time may still have run: release it (a settle with no
  // use, applied only if its hold is there), kept and replayed like any settle.
  if (out.maybe_applied) settle(hold_for(keys_, d, now), 0, 0);
  co_return out;
}

void SharedLimiter::settle(SharedHold hold, std::int64_t tokens, std::int64_t nano_usd) {
  Unsettled u{std::move(hold), tokens, nano_usd};
  stats_.cluster_unsettled.add(1);  // until it is applied (or dropped)
  if (!unsettled_.empty() || !redis_->up()) {  // keep the order: the older ones go first
    keep(std::move(u));
    return;
  }
  net::co_spawn(redis_->executor(), run_settle(shared_from_this(), std::move(u)), net::detached);
}

net::awaitable<void> SharedLimiter::run_settle(std::shared_ptr<SharedLimiter> self, Unsettled u) {
  auto out = co_await settle_shared(*self->redis_, self->keys_, u.hold, u.tokens, u.nano_usd,
                                    core::unix_now_ms());
  if (out.failure) {
    self->keep(std::move(u));
    co_return;
  }
  self->stats_.cluster_unsettled.add(-1);
  log_crossed(out.crossed);
}

void SharedLimiter::keep(Unsettled u) {
  if (unsettled_.size() >= kMaxUnsettled) {
    unsettled_.pop_front();
    stats_.cluster_unsettled.add(-1);
    if (dropped_++ % 10'000 == 0) {
      metrics::log_error("shared settlements dropped: the store has been away too long",
                         core::JsonFields{}.add("dropped", static_cast<std::int64_t>(dropped_)));
    }
  }
  unsettled_.push_back(std::move(u));
  if (replaying_) return;
  replaying_ = true;
  net::co_spawn(redis_->executor(), replay(shared_from_this()), net::detached);
}

// Settles what was kept, oldest first, once the store answers; pauses while it does not.
net::awaitable<void> SharedLimiter::replay(std::shared_ptr<SharedLimiter> self) {
  net::steady_timer pause(self->redis_->executor());
  while (!self->unsettled_.empty() && !self->redis_->closed()) {
    if (!self->redis_->up()) {
      pause.expires_after(kReplayPause);
      co_await pause.async_wait(net::as_tuple(net::use_awaitable));
      continue;
    }
    auto& u = self->unsettled_.front();
    auto out = co_await settle_shared(*self->redis_, self->keys_, u.hold, u.tokens, u.nano_usd,
                                      core::unix_now_ms());
    if (out.failure && ++u.attempts < kMaxAttempts) {
      pause.expires_after(kReplayPause);
      co_await pause.async_wait(net::as_tuple(net::use_awaitable));
      continue;
    }
    if (out.failure) {
      metrics::log_error("a shared settlement failed too often and is dropped",
                         core::JsonFields{}.add("reason", to_string(*out.failure)));
    }
    log_crossed(out.crossed);
    self->unsettled_.pop_front();
    self->stats_.cluster_unsettled.add(-1);
  }
  self->replaying_ = false;
}

}  // namespace tollgate::cluster

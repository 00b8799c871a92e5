#include "cluster/shared_limiter.hpp"

#include <algorithm>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>

#include "cluster/cluster_options.hpp"
#include "cluster/limit_scripts.hpp"
#include "tollgate/core/request_id.hpp"
#include "tollgate/metrics/logging.hpp"

namespace tollgate::cluster {

namespace {

// A settle wakes the flusher: a flush follows it within kFlushGap (one flush per gap at most,
// however many requests end: their settlements ride together). Without settles, the flusher
// still looks every kFlushEvery for leases past their ttl.
constexpr std::chrono::milliseconds kFlushGap{20};
constexpr std::chrono::milliseconds kFlushEvery{250};
constexpr std::chrono::milliseconds kReplayPause{500};  // between attempts while the store fails
constexpr std::chrono::milliseconds kHeartbeatEvery{5000};
constexpr std::chrono::milliseconds kHeartbeatRetry{250};  // while Redis is away
constexpr int kMaxAttempts = 100;  // attempts at one flush or release while the store is up (~50 s)

void log_crossed(const std::vector<BudgetName>& crossed) {
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
  auto client = make_client(std::move(ex), c, std::make_shared<StatsObserver>(stats), "limits");
  if (!client) return nullptr;
  client->start();
  auto limiter = std::make_shared<SharedLimiter>(client, c.key_prefix, LeaseTerms{c.lease.share, c.lease.ttl}, stats);
  limiter->start();
  return limiter;
}

SharedLimiter::SharedLimiter(std::shared_ptr<RedisClient> redis, std::string key_prefix, LeaseTerms terms,
                             metrics::WorkerStats& stats)
    : redis_(std::move(redis)),
      stats_(stats),
      keys_(key_prefix),
      prefix_(key_prefix),
      seq_key_(keys_.flushes(core::new_request_id())),
      book_(LimitKeys(std::move(key_prefix)), terms),
      wake_(redis_->executor()) {}

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
  auto out = co_await reserve_shared(*redis_, keys_, d, book_.topups(d, now), now);
  if (out.kind == ReserveOutcome::Kind::kHeld) book_.granted(d, out, now);
  // A reserve whose reply did not come in time may still have run: release what it took.
  if (out.maybe_applied) keep(Pending{Release{d.id}});
  co_return out;
}

void SharedLimiter::settle(SharedHold hold, std::int64_t tokens, std::int64_t nano_usd) {
  book_.settle(hold, tokens, nano_usd, core::unix_now_ms());
  report();
  if (idle_ && !failing_) wake_.cancel();
}

std::size_t SharedLimiter::unsettled() const {
  if (!draining_ || redis_->up()) return pending_.size() + book_.pending();
  auto owing = std::count_if(pending_.begin(), pending_.end(), [](const Pending& p) {
    const auto* f = std::get_if<Flush>(&p.what);
    return f != nullptr && f->owes();
  });
  return static_cast<std::size_t>(owing) + book_.owed();
}

void SharedLimiter::start() { net::co_spawn(redis_->executor(), run(shared_from_this()), net::detached); }

void SharedLimiter::drain() {
  draining_ = true;
  book_.drain();
  if (idle_) wake_.cancel();
}

void SharedLimiter::report() {
  auto now = static_cast<std::int64_t>(unsettled());
  stats_.cluster_unsettled.add(now - reported_);
  reported_ = now;
}

void SharedLimiter::keep(Pending p) {
  if (pending_.size() >= kMaxUnsettled) {
    pending_.pop_back();  // the newest release (the flush in front stays: it carries the use)
    if (dropped_++ % 10'000 == 0) {
      metrics::log_error("shared grant releases dropped: the store has been away too long",
                         core::JsonFields{}.add("dropped", static_cast<std::int64_t>(dropped_)));
    }
  }
  pending_.push_back(std::move(p));
}

// Sends what is due, one at a time in order: a flush is made only once the previous one applied
// (its sequence number then orders them), so the book aggregates while the store is away.
net::awaitable<void> SharedLimiter::run(std::shared_ptr<SharedLimiter> self) {
  while (!self->redis_->closed()) {
    if (self->pending_.empty()) {
      auto f = self->book_.flush(core::unix_now_ms(), self->draining_);
      if (!f.empty()) self->pending_.push_back(Pending{std::move(f)});
    }
    self->failing_ = false;
    while (!self->pending_.empty() && self->redis_->up() && !self->failing_) {
      self->failing_ = !co_await self->apply(self->pending_.front());
      if (!self->failing_) self->pending_.pop_front();
    }
    self->report();
    auto flushed = std::chrono::steady_clock::now();
    bool away = self->failing_ || !self->redis_->up();
    self->idle_ = true;  // a settle (or the drain) may end this pause early
    self->wake_.expires_after(away ? kReplayPause : self->draining_ ? kFlushGap : kFlushEvery);
    co_await self->wake_.async_wait(net::as_tuple(net::use_awaitable));
    self->idle_ = false;
    if (auto rest = flushed + kFlushGap - std::chrono::steady_clock::now(); rest.count() > 0) {
      self->wake_.expires_after(rest);
      co_await self->wake_.async_wait(net::as_tuple(net::use_awaitable));
    }
  }
}

// True once `p` is applied (or given up on); false to try again after a pause.
net::awaitable<bool> SharedLimiter::apply(Pending& p) {
  std::optional<RedisFailure> failure;
  if (auto* f = std::get_if<Flush>(&p.what)) {
    auto out = co_await flush_shared(*redis_, seq_key_, *f);
    failure = out.failure;
    log_crossed(out.crossed);
  } else {
    failure = co_await release_shared(*redis_, keys_, std::get<Release>(p.what).demand_id);
  }
  if (!failure) co_return true;
  if (++p.attempts < kMaxAttempts) co_return false;
  metrics::log_error("a shared flush or release failed too often and is dropped",
                     core::JsonFields{}.add("reason", to_string(*failure)));
  co_return true;
}

}  // namespace tollgate::cluster

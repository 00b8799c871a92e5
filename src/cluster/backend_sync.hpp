#pragma once
// Backend state one replica learns reaches the others within ~100 ms: a throttle (the cooldown
// of a 429's retry-after), an open circuit breaker, a failed (or recovered) health probe. So the
// fleet stops sending to a throttled PTU together, and comes back together.
//
// How: nothing on the request path. The control thread looks at every backend's state every
// 25 ms; a throttle or breaker end later than any it knows of, or a probe verdict that changed,
// was learned locally and is published on `<prefix>backends` (times as unix ms: replicas share no
// steady clock). Messages from other replicas are applied to the local state and become known,
// so they are not published back. Remaining-token readings stay local. A replica that was away
// from Redis misses what was published meanwhile (pub/sub keeps nothing): its own requests will
// meet the backend's 429s and learn it again.
//
// Thread: the control thread's executor (the health checker's; the only writer of probe state).
// Lifetime: shared_ptr; close() stops the poll and the connections.

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "cluster/redis_client.hpp"
#include "cluster/redis_subscriber.hpp"
#include "tollgate/config/config.hpp"
#include "tollgate/routing/backend_state.hpp"

namespace tollgate::cluster {

/// One backend as the sync sees it: its configured name (the same on every replica) and state.
struct SyncedBackend {
  std::string name;
  std::shared_ptr<routing::BackendState> state;
};

/// What a replica tells the others about a backend.
struct BackendNews {
  enum class Kind : std::uint8_t { kThrottled, kBreakerOpen, kProbe };
  Kind kind = Kind::kThrottled;
  std::string backend;
  std::int64_t value = 0;  // kThrottled, kBreakerOpen: until (unix ms); kProbe: 1 healthy, 0 not
  std::string origin;      // the replica that learned it
};
/// "origin\tkind\tbackend\tvalue"; nullopt for anything else (a message is never trusted).
std::string encode(const BackendNews& n);
std::optional<BackendNews> decode(std::string_view payload);

class BackendSync : public std::enable_shared_from_this<BackendSync> {
 public:
  static constexpr std::chrono::milliseconds kPollEvery{25};

  /// Null (logged) when the connections cannot be set up (the CA file cannot be loaded).
  static std::shared_ptr<BackendSync> create(net::any_io_executor ex, const config::ClusterConfig& c,
                                             std::string replica_id, std::shared_ptr<RedisObserver> observer);
  /// The backends of the running config (after a load or reload). Thread: the sync's executor.
  void set_backends(std::vector<SyncedBackend> backends);
  void start();
  void close();

 private:
  struct Known {
    routing::TimeMs throttled_until = 0;  // steady ms
    routing::TimeMs open_until = 0;
    bool probe_healthy = true;
  };
  BackendSync(std::shared_ptr<RedisClient> pub, std::string channel, std::string replica_id);
  static net::awaitable<void> poll_loop(std::shared_ptr<BackendSync> self);
  void poll();
  void publish(BackendNews news);
  void apply(const BackendNews& news);

  std::shared_ptr<RedisClient> pub_;
  std::shared_ptr<RedisSubscriber> sub_;
  std::string channel_;
  std::string replica_id_;
  std::vector<SyncedBackend> backends_;
  std::unordered_map<std::string, Known> known_;  // by backend name
  bool closed_ = false;
};

}  // namespace tollgate::cluster

#pragma once
// Rate limits and budgets shared by every replica through Redis: one script reserves a request's
// units from all its buckets and budgets at once (all or nothing), another settles them when it
// ends. The same GCRA buckets and calendar budgets as ratelimit/, held in Redis instead of this
// process (limit_scripts.hpp; docs/design/cluster.md states the bound this gives).
//
// Thread: the functions run on the executor of the RedisClient passed in (a worker's). A
// SharedHold is a value: the request owns it until it is settled.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/redis_client.hpp"
#include "cluster/shared_hold.hpp"
#include "tollgate/ratelimit/bucket.hpp"
#include "tollgate/ratelimit/budget.hpp"

namespace tollgate::cluster {

/// The names of the shared counters in Redis, under the configured prefix:
/// `<prefix>bucket:<scope>:<name>:<unit>` and `<prefix>budget:<scope>:<name>:<period>:<measure>:<index>`.
class LimitKeys {
 public:
  explicit LimitKeys(std::string prefix) : prefix_(std::move(prefix)) {}
  std::string bucket(const ratelimit::Limit& l) const;
  std::string budget(const ratelimit::BudgetLimit& b, std::int64_t period_index) const;
  std::string settlement(std::string_view id) const { return prefix_ + "settled:" + std::string(id); }
  std::string hold(std::string_view id) const { return prefix_ + "hold:" + std::string(id); }

 private:
  std::string prefix_;
};

/// Reserves `d` in Redis: never-fitting requests are refused without a round trip.
net::awaitable<ReserveOutcome> reserve_shared(RedisClient& redis, const LimitKeys& keys, const Demand& d,
                                             ratelimit::UnixMs now);

/// What a settle reports: the budgets whose warning level it crossed, or why it failed (the
/// caller keeps the settlement to replay: a budget must see every use).
struct SettleOutcome {
  std::vector<ratelimit::BudgetLimit> crossed;
  std::optional<RedisFailure> failure;
};

/// What a successful reserve of `d` holds (also what a release after a timed-out reserve gives
/// back: settle it with no use).
SharedHold hold_for(const LimitKeys& keys, const Demand& d, ratelimit::UnixMs now);

/// Settles `hold` against the real use (tokens, and nano-USD for money budgets), once: a settle
/// with the id of one Redis already ran (a replay after a timeout) changes nothing.
net::awaitable<SettleOutcome> settle_shared(RedisClient& redis, const LimitKeys& keys, const SharedHold& hold,
                                           std::int64_t used_tokens, std::int64_t used_nano_usd,
                                           ratelimit::UnixMs now);

/// Microseconds that `n` units take at `per_minute` (rounded up), as the scripts count them.
std::int64_t cost_us(std::int64_t n, std::int64_t per_minute);
/// Units of `free_us` microseconds of room at `per_minute`.
std::int64_t units_of(std::int64_t free_us, std::int64_t per_minute);

}  // namespace tollgate::cluster

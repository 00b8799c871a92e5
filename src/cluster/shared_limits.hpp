#pragma once
// Rate limits and budgets shared by every replica through Redis: one script reserves a request's
// units (and a worker's top-ups of its leases, lease_book.hpp) from all its buckets and budgets
// at once (all or nothing), another applies a worker's batched give-backs and use. The same GCRA buckets and calendar budgets as ratelimit/, held in Redis instead of this
// process (limit_scripts.hpp; docs/design/cluster.md states the bound this gives).
//
// Thread: the functions run on the executor of the RedisClient passed in (a worker's). A
// SharedHold is a value: the request owns it until it is settled.

#include <algorithm>
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
  /// A worker's flush sequence (one per limiter: its flushes apply once, in order).
  std::string flushes(std::string_view id) const { return prefix_ + "flushed:" + std::string(id); }
  std::string hold(std::string_view id) const { return prefix_ + "hold:" + std::string(id); }

 private:
  std::string prefix_;
};

/// Reserves `d` in Redis, with the top-ups `extra` where they fit: never-fitting requests are
/// refused without a round trip.
net::awaitable<ReserveOutcome> reserve_shared(RedisClient& redis, const LimitKeys& keys, const Demand& d,
                                             const Topups& extra, ratelimit::UnixMs now);

/// Gives back what the grant of demand `id` took, if it ran and was not given back before (a
/// reserve whose reply was lost). Nothing when it succeeds.
net::awaitable<std::optional<RedisFailure>> release_shared(RedisClient& redis, const LimitKeys& keys,
                                                          std::string_view id);

/// What one flush gives the store.
struct Flush {
  struct Bucket {
    std::string key;
    std::int64_t delta_us = 0;  // negative: units given back; positive: use beyond what was reserved
  };
  struct Budget {
    std::string key;
    std::int64_t release = 0;  // off `reserved`
    std::int64_t use = 0;      // onto `used`
    std::int64_t warn_level = 0;
    ratelimit::UnixMs expiry = 0;  // of the key (unix ms)
    BudgetName name;               // for the warning log
  };
  std::vector<Bucket> buckets;
  std::vector<Budget> budgets;
  std::vector<std::string> forget;  // grant holds no longer needed
  std::int64_t seq = 0;             // applied once, in order (the store keeps the last seq)
  bool empty() const { return buckets.empty() && budgets.empty() && forget.empty(); }
  /// It carries use or debt (not only units given back): what budgets and buckets must see.
  bool owes() const {
    return std::any_of(buckets.begin(), buckets.end(), [](const Bucket& b) { return b.delta_us > 0; }) ||
           std::any_of(budgets.begin(), budgets.end(), [](const Budget& b) { return b.use > 0; });
  }
};

/// What a flush reports: the budgets whose warning level it crossed, or why it failed (the
/// caller keeps the flush to send again: a budget must see every use; a flush the store applied
/// before changes nothing the second time).
struct SettleOutcome {
  std::vector<BudgetName> crossed;
  std::optional<RedisFailure> failure;
};

/// Applies `f` under the sequence key `seq_key` (applied once, in order).
net::awaitable<SettleOutcome> flush_shared(RedisClient& redis, std::string_view seq_key, const Flush& f);

/// What the demand `d` holds once reserved (in the store or from leases).
SharedHold hold_for(const LimitKeys& keys, const Demand& d, ratelimit::UnixMs now);

/// Units of `l` a request of `tokens` takes (a request limit: one).
std::int64_t units_taken(const ratelimit::Limit& l, std::int64_t tokens);
/// Units of budget `b` a request of `tokens` and `nano_usd` takes.
std::int64_t budget_amount(const ratelimit::BudgetLimit& b, std::int64_t tokens, std::int64_t nano_usd);
/// Until when the store keeps budget `b`'s key of the period containing `now` (unix ms).
ratelimit::UnixMs key_expiry(const ratelimit::BudgetLimit& b, ratelimit::UnixMs now);

/// Microseconds that `n` units take at `per_minute` (rounded up), as the scripts count them.
std::int64_t cost_us(std::int64_t n, std::int64_t per_minute);
/// Units of `free_us` microseconds of room at `per_minute`.
std::int64_t units_of(std::int64_t free_us, std::int64_t per_minute);

}  // namespace tollgate::cluster

#pragma once
// A worker's leases of shared capacity: units of a bucket or budget reserved in Redis ahead of
// need, so that most requests are admitted without a round trip. A request whose every bucket
// and budget has room in a live lease takes its units here; the others go to Redis, which
// reserves their units plus a top-up (at most `share` of the limit, and at most a quarter of the
// room left, so leases shrink to nothing near a limit: there every request is a round trip, as
// exact as without leases). What requests give back, and what they used, is batched into one
// flush every few hundred milliseconds; a lease not renewed within `ttl` goes back to Redis.
//
// Leased units are reserved in Redis, so leases never admit more than the store would have: a
// budget is never overspent because of them. What they change is when units are counted: a
// bucket's unit taken from a lease was reserved up to `ttl` earlier, so admitted tokens in any
// window ≤ the store's allowance over that window plus `ttl` (docs/design/cluster.md).
//
// Plain values, no I/O: SharedLimiter sends what flush() returns. Thread: one worker's.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "cluster/shared_hold.hpp"
#include "cluster/shared_limits.hpp"

namespace tollgate::cluster {

/// How much a worker may lease and for how long (cluster.lease).
struct LeaseTerms {
  double share = 0.01;                     // of a limit, per top-up; 0: no leases
  std::chrono::milliseconds ttl{1000};     // a lease's units go back this long after its grant
};

class LeaseBook {
 public:
  LeaseBook(LimitKeys keys, LeaseTerms terms) : keys_(std::move(keys)), terms_(terms) {}

  /// Takes `d`'s units from live leases if every bucket and budget of it has enough; else nothing
  /// changes. The hold settles here (settle()).
  std::optional<ReserveOutcome> take(const Demand& d, ratelimit::UnixMs now);
  /// The top-ups to ask for with `d` when it goes to the store.
  Topups topups(const Demand& d, ratelimit::UnixMs now) const;
  /// A reserve of `d` with `extra` was held: adds the granted top-ups to the leases.
  void granted(const Demand& d, const ReserveOutcome& held, ratelimit::UnixMs now);
  /// A request ended: its unused units go back to the leases, its use is kept for the next flush.
  void settle(const SharedHold& hold, std::int64_t tokens, std::int64_t nano_usd, ratelimit::UnixMs now);
  /// Everything to send now: use, debts, and the units of leases older than ttl (all of them
  /// when `all`, as on drain). Leaves the book as if the flush applied.
  Flush flush(ratelimit::UnixMs now, bool all);
  /// Leases with units or use not yet given back (what a drain waits for).
  std::size_t pending() const;
  /// Leases with use or debt not yet flushed (what a drain waits for even while the store is away).
  std::size_t owed() const;
  /// From now on nothing is leased: requests go to the store, and flush() gives everything back.
  void drain() { draining_ = true; }

 private:
  // Units a lease holds for requests of this worker (avail, at most cap), and what the next
  // flush gives the store: units back, units owed (use beyond a reservation), use.
  struct BucketLease {
    std::int64_t avail = 0;
    std::int64_t cap = 0;         // the last top-up granted: avail never exceeds it
    std::int64_t give_back = 0;
    std::int64_t owe = 0;
    std::int64_t per_minute = 0;  // as reserved
    std::int64_t room = 0;        // units the store had left after the last grant
    ratelimit::UnixMs granted_at = 0;  // 0: never granted (only what requests give back)
  };
  struct BudgetLease {
    std::int64_t avail = 0;
    std::int64_t cap = 0;
    std::int64_t release = 0;  // off the store's `reserved`
    std::int64_t use = 0;      // onto the store's `used`
    std::int64_t warn_level = 0;
    ratelimit::UnixMs expiry = 0;
    ratelimit::UnixMs granted_at = 0;
    BudgetName name;
  };
  template <class Lease>
  void keep(Lease& l, std::int64_t units, std::int64_t& back, ratelimit::UnixMs now) const;
  bool live(ratelimit::UnixMs granted_at, ratelimit::UnixMs now) const;
  BudgetLease& budget_lease(const ratelimit::BudgetLimit& b, std::int64_t period, ratelimit::UnixMs now);

  LimitKeys keys_;
  LeaseTerms terms_;
  std::unordered_map<std::string, BucketLease> buckets_;
  std::unordered_map<std::string, BudgetLease> budgets_;
  std::vector<std::string> forget_;
  std::int64_t seq_ = 0;
  bool draining_ = false;
};

}  // namespace tollgate::cluster

#pragma once
// What a request asks of the shared limits (Demand) and what it holds in Redis until it ends
// (SharedHold): plain values, so the request pipeline can carry them without Asio. The calls
// that reserve and settle them are in shared_limits.hpp. Thread: the request's worker.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tollgate/ratelimit/bucket.hpp"
#include "tollgate/ratelimit/budget.hpp"

namespace tollgate::cluster {

/// A request's demand: its limits and budgets as the request path sees them, and its estimate.
struct Demand {
  std::vector<ratelimit::Limit> limits;
  const std::vector<ratelimit::BudgetLimit>* budgets = nullptr;  // null: none (points into the snapshot)
  std::int64_t tokens = 0;    // the estimate (prompt + allowance)
  std::int64_t nano_usd = 0;  // the price ceiling of the estimate (0 without a price)
  std::string id;             // unique per demand (not the client's x-request-id): its hold in the store
};

/// A budget as logs name it, owned (a lease outlives the snapshot its requests came from).
struct BudgetName {
  ratelimit::Scope scope = ratelimit::Scope::kClient;
  std::string name;
  ratelimit::Period period = ratelimit::Period::kDay;
  ratelimit::Measure measure = ratelimit::Measure::kTokens;
  std::int64_t limit = 0;
  static BudgetName of(const ratelimit::BudgetLimit& b) {
    return BudgetName{b.scope, std::string(b.name), b.period, b.measure, b.limit};
  }
};

/// Units to lease beyond a demand's own, per limit and per budget (in the demand's order; 0: none).
struct Topups {
  std::vector<std::int64_t> buckets, budgets;
};

/// What one request holds of the shared limits until it ends (its worker's LeaseBook settles it).
struct SharedHold {
  struct HeldBucket {
    std::string key;
    std::int64_t per_minute = 0;
  };
  struct HeldBudget {
    ratelimit::BudgetLimit limit;
    std::int64_t amount = 0;  // reserved (tokens or nano-USD by limit.measure); 0: use only
    std::int64_t period = 0;  // the period index it was reserved in
  };
  std::vector<HeldBucket> buckets;  // the token buckets (a request limit keeps its request)
  std::int64_t tokens = 0;          // reserved from each of them
  std::vector<HeldBudget> budgets;
  bool taken = false;  // something was reserved (perhaps only requests: nothing to settle)
  bool needs_settle() const { return !buckets.empty() || !budgets.empty(); }
};

/// A hold of nothing that settles a use into `d`'s budgets: a request admitted by this replica's
/// own buckets while the store was away (on_failure: local) still counts in the shared budgets.
SharedHold use_only(const Demand& d, ratelimit::UnixMs now);

/// What reserving a demand in the shared store came to.
struct ReserveOutcome {
  enum class Kind : std::uint8_t { kHeld, kLimited, kOverBudget, kUnavailable };
  Kind kind = Kind::kUnavailable;
  SharedHold hold;                                            // kHeld
  std::optional<ratelimit::Reservation::Refusal> limited;     // kLimited (points into the demand)
  std::optional<ratelimit::BudgetHold::Refusal> over_budget;  // kOverBudget (into the snapshot)
  /// Per limit of the demand (same order): the units that could still be taken after this
  /// request (kHeld), or before it for the refusing one (kLimited; others -1: unknown).
  std::vector<std::int64_t> remaining;
  Topups granted;       // kHeld from the store: the top-ups it reserved beyond the demand
  std::string problem;  // kUnavailable: why ("timeout", "closed", an unexpected reply ...)
  bool maybe_applied = false;  // kUnavailable after the script was sent: it may have run (release it)
};

/// Settles holds after their requests ended, without making them wait (a worker's
/// SharedLimiter). Thread: the worker's.
class Settler {
 public:
  virtual ~Settler() = default;
  /// Settles `hold` against the real use: tokens, and nano-USD for money budgets.
  virtual void settle(SharedHold hold, std::int64_t tokens, std::int64_t nano_usd) = 0;
};

}  // namespace tollgate::cluster

#pragma once
// Calendar budgets (tokens and money per UTC day and month) of clients and tenants, and what a
// request costs by its deployment's price table. A budget is held like a bucket: admission
// reserves the request's estimate (all or nothing across the budgets that apply), the end of the
// request settles it against the real use. Budgets are rebuilt from the usage ledger at start.
// See docs/design/rate-limiting.md.

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tollgate/config/config.hpp"
#include "tollgate/core/usage.hpp"
#include "tollgate/ratelimit/bucket.hpp"

namespace tollgate::ratelimit {

using core::UnixMs;        // wall-clock milliseconds since the epoch (UTC)
using core::unix_now_ms;  // the one clock (tollgate/core/clock.hpp)

enum class Period : std::uint8_t { kDay, kMonth };
enum class Measure : std::uint8_t { kTokens, kNanoUsd };
std::string_view to_string(Period p);    // day | month
std::string_view to_string(Measure m);   // tokens | usd

/// The index of the UTC calendar period holding `t` (days since the epoch, or months since
/// January 1970), and the period's bounds in unix ms.
std::int64_t period_index(Period p, UnixMs t);
UnixMs period_start(Period p, UnixMs t);
UnixMs period_end(Period p, UnixMs t);  // the next period's start

/// One budget's counter: use and outstanding reservations in the current period. A short
/// mutex (a few instructions) rather than atomics: the period roll-over, the check and the
/// reservation must be one step. Thread: any.
class Budget {
 public:
  enum class Verdict : std::uint8_t { kOk, kBusy, kExhausted };
  /// Reserves `amount` unless use + reservations + amount would pass `limit`: kExhausted when the
  /// use alone would (nothing will change that before the period ends), kBusy when requests in
  /// flight hold the rest (their settlement may free it). Returns the period reserved in.
  Verdict reserve(std::int64_t amount, std::int64_t limit, Period p, UnixMs now, std::int64_t& period);
  /// Settles a reservation of `reserved` made in `period`: released (when that period is still
  /// current), and `used` added to the current period. True when this crossed `warn_level`.
  bool settle(std::int64_t reserved, std::int64_t period, std::int64_t used, std::int64_t warn_level,
              Period p, UnixMs now);
  /// Use replayed from the ledger at start (the period's total so far).
  void seed(std::int64_t used, std::int64_t period);
  /// The current period's use (0 once the period the counter holds has passed).
  std::int64_t used(Period p, UnixMs now) const;

 private:
  void roll(Period p, UnixMs now);  // holds m_
  mutable std::mutex m_;
  std::int64_t period_ = -1;
  std::int64_t used_ = 0;
  std::int64_t reserved_ = 0;
  bool warned_ = false;
};

/// Every budget counter of the process, by key ("client:bot:day:tokens"), so reloads keep them
/// and the ledger replay can seed them. Thread: control.
class BudgetRegistry {
 public:
  std::shared_ptr<Budget> get(const std::string& key);
  static std::string key(Scope scope, std::string_view name, Period p, Measure m);

 private:
  std::unordered_map<std::string, std::shared_ptr<Budget>> budgets_;
};

/// One budget as the request path sees it.
struct BudgetLimit {
  Budget* budget = nullptr;
  std::int64_t limit = 0;  // tokens, or nano-USD
  std::int64_t warn_level = 0;
  Period period = Period::kDay;
  Measure measure = Measure::kTokens;
  Scope scope = Scope::kClient;
  std::string_view name;  // the client or tenant (points into the config)
};

/// The budgets of a client or tenant as configured, with their counters from `registry`.
/// Appends to `limits` and keeps the counters alive in `keep`.
void add_budgets(BudgetRegistry& registry, Scope scope, const std::string& name,
                 const config::BudgetConfig& b, std::vector<BudgetLimit>& limits,
                 std::vector<std::shared_ptr<Budget>>& keep);

/// Amounts held from the budgets for one request.
class BudgetHold {
 public:
  struct Refusal {
    const BudgetLimit* limit = nullptr;
    bool exhausted = false;  // true: until the period ends; false: busy (in-flight requests)
    std::int64_t used = 0;
  };
  std::optional<Refusal> reserve(const std::vector<BudgetLimit>& limits, std::int64_t tokens,
                                 std::int64_t nano_usd, UnixMs now);
  /// Gives everything back unused (another limit refused the request). Once; no warning.
  void release(UnixMs now);
  /// Settles once against the real use; appends the budgets whose warning level this crossed.
  void settle(std::int64_t tokens, std::int64_t nano_usd, UnixMs now,
              std::vector<const BudgetLimit*>* crossed);
  bool held() const { return !held_.empty(); }

 private:
  struct Held {
    BudgetLimit limit;
    std::int64_t amount = 0;
    std::int64_t period = 0;
  };
  std::vector<Held> held_;
  bool settled_ = false;
};

/// Nano-USD per token of each kind, from a deployment's price (USD per 1,000 tokens).
struct Price {
  double prompt = 0, completion = 0, cached = 0, reasoning = 0;  // nano-USD per token
  explicit Price(const config::PriceConfig& p)
      : prompt(p.prompt_per_1k * 1e6), completion(p.completion_per_1k * 1e6),
        cached(p.cached_prompt_per_1k * 1e6), reasoning(p.reasoning_per_1k * 1e6) {}
  /// What `u` cost: uncached prompt, cached prompt, visible output and reasoning output
  /// (reasoning tokens are part of completion_tokens).
  std::int64_t cost(const core::Usage& u) const;
  /// The most a request of `prompt` tokens and `allowance` output tokens can cost.
  std::int64_t ceiling(std::int64_t prompt, std::int64_t allowance) const;
};

}  // namespace tollgate::ratelimit

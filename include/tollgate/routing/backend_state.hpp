#pragma once
// The live state of one backend, shared by every worker: capacity model (throttled until,
// remaining quota, PTU utilization), concurrency, circuit breaker and active-probe health.
// Lock-free: every field is one atomic. Lives outside the config snapshot (a reload with the same
// backend keeps it); aligned to cache lines so two backends never share one. Time is injected as
// steady-clock milliseconds. See docs/design/routing.md.

#include <atomic>
#include <cstdint>
#include <optional>
#include <string_view>

#include "tollgate/core/clock.hpp"
#include "tollgate/routing/signals.hpp"

namespace tollgate::routing {

using core::TimeMs;         // steady-clock milliseconds (the time base of BackendState)
using core::steady_now_ms;  // the one clock (tollgate/core/clock.hpp)

enum class Condition : std::uint8_t {
  kAvailable,
  kThrottled,
  kBreakerOpen,
  kBreakerHalfOpen,
  kProbeFailed,
  kSaturated,  // max_in_flight reached
  kCount
};
std::string_view to_string(Condition c);

enum class Breaker : std::uint8_t { kClosed, kOpen, kHalfOpen };

/// How an attempt ended, as far as the breaker is concerned.
enum class Outcome : std::uint8_t {
  kSuccess,  // any answer that is not a failure (2xx, 4xx other than 408/429)
  kFailure,  // 5xx, 408, connect/TLS failure, timeout, broken response
  kNeutral,  // nothing learned (an attempt that never ran to an answer, a 429: the throttle's)
};

struct BreakerPolicy {
  unsigned failures = 5;
  TimeMs open_ms = 5'000;
  TimeMs max_open_ms = 300'000;
};

class alignas(64) BackendState {
 public:
  // --- capacity model (writers: workers; readers: all, relaxed) ---
  /// The backend refuses work until `until` (keeps the later of two throttles).
  void throttle(TimeMs until);
  TimeMs throttled_until() const { return throttled_until_.load(std::memory_order_relaxed); }
  /// Remaining quota and utilization from a response's headers.
  void observe(const Signals& s, TimeMs now);
  /// Remaining tokens/requests as last reported, while that report is fresh.
  std::optional<std::int64_t> remaining_tokens(TimeMs now) const;
  std::optional<std::int64_t> remaining_requests(TimeMs now) const;
  std::optional<std::int64_t> last_remaining_tokens() const;
  std::optional<std::int64_t> last_remaining_requests() const;
  /// PTU utilization in percent, as last reported.
  std::optional<double> utilization() const;

  // --- concurrency ---
  /// Takes one in-flight slot unless `cap` (0: none) is reached.
  bool try_acquire(std::uint32_t cap);
  void release();
  std::int64_t in_flight() const { return in_flight_.load(std::memory_order_relaxed); }

  // --- circuit breaker ---
  Breaker breaker() const { return static_cast<Breaker>(breaker_.load(std::memory_order_acquire)); }
  /// When an open breaker lets a trial through.
  TimeMs breaker_until() const { return open_until_.load(std::memory_order_relaxed); }
  /// Closed, or open with its period over (a trial may go).
  bool breaker_allows(TimeMs now) const;
  /// For a backend the balancer chose: true when closed, or when this caller won the half-open
  /// trial (`trial` set); false when another request holds the trial or the period is not over.
  bool claim(TimeMs now, bool& trial);
  /// Feeds an attempt's outcome. `trial`: this attempt was the half-open trial.
  void record(Outcome outcome, bool trial, TimeMs now, const BreakerPolicy& policy);
  /// Opens the breaker until `until` (or keeps a later end), as another replica saw it open;
  /// counts nothing. Writer: the control thread (cluster sync).
  void hold_open(TimeMs until);
  std::uint64_t breaker_opens() const { return opens_total_.load(std::memory_order_relaxed); }
  std::uint64_t throttles() const { return throttles_total_.load(std::memory_order_relaxed); }

  // --- active health check (writer: control thread) ---
  void set_probe_healthy(bool healthy) { probe_ok_.store(healthy, std::memory_order_relaxed); }
  bool probe_healthy() const { return probe_ok_.load(std::memory_order_relaxed); }

  /// Usable for a new request now (the in-flight cap aside).
  bool available(TimeMs now) const {
    return probe_healthy() && now >= throttled_until() && breaker_allows(now);
  }
  /// The one condition exported as a metric (the most severe first).
  Condition condition(TimeMs now, std::uint32_t cap) const;
  /// When this backend can take work again if it cannot now: nullopt when it can now, or when
  /// nothing says (failed probes).
  /// `busy_is_now`: count a backend that is only busy (at its cap, or running its half-open
  /// trial) as recovering now — a request ending can free it any moment (the waiting decision);
  /// otherwise assume about a second (the retry-after a client is told).
  std::optional<TimeMs> recovery(TimeMs now, std::uint32_t cap, bool busy_is_now = false) const;

 private:
  void open(TimeMs now, const BreakerPolicy& policy);

  std::atomic<TimeMs> throttled_until_{0};
  std::atomic<std::int64_t> remaining_tokens_{-1};    // -1: unknown
  std::atomic<std::int64_t> remaining_requests_{-1};  // -1: unknown
  std::atomic<TimeMs> remaining_until_{0};            // the remaining-* report is fresh until then
  std::atomic<std::int64_t> utilization_bp_{-1};      // hundredths of a percent; -1: unknown
  std::atomic<std::int64_t> in_flight_{0};
  std::atomic<std::uint8_t> breaker_{0};
  std::atomic<std::uint32_t> failures_{0};   // consecutive
  std::atomic<std::uint32_t> reopens_{0};    // consecutive opens without a success between
  std::atomic<TimeMs> open_until_{0};
  std::atomic<std::uint64_t> opens_total_{0};
  std::atomic<std::uint64_t> throttles_total_{0};
  std::atomic<bool> probe_ok_{true};
};

/// Envoy-style retry budget of one deployment: retries in progress may not exceed
/// max(min_retries, budget × requests in progress). Shared by all workers.
class alignas(64) RetryBudget {
 public:
  void begin_request() { active_.fetch_add(1, std::memory_order_relaxed); }
  void end_request() { active_.fetch_sub(1, std::memory_order_relaxed); }
  /// Takes a retry slot; false when the budget is spent.
  bool try_begin_retry(double budget, unsigned min_retries);
  void end_retry() { retries_.fetch_sub(1, std::memory_order_relaxed); }
  std::int64_t active() const { return active_.load(std::memory_order_relaxed); }
  std::int64_t retries() const { return retries_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::int64_t> active_{0};
  std::atomic<std::int64_t> retries_{0};
};

}  // namespace tollgate::routing

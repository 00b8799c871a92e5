#include "tollgate/routing/backend_state.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>

namespace tollgate::routing {

namespace {
// A remaining-quota report without a reset time is trusted this long: the counters describe a
// one-minute window (tokens) or a ten-second one (requests), and a backend that is avoided
// because of an old report must get a fresh look soon.
constexpr TimeMs kRemainingFreshMs = 10'000;
constexpr TimeMs kRemainingMaxFreshMs = 60'000;
// A half-open or saturated backend has no known recovery time: assume this.
constexpr TimeMs kShortRecoveryMs = 1'000;
}  // namespace

std::string_view to_string(Condition c) {
  static constexpr std::string_view kNames[] = {"available",         "throttled",    "breaker_open",
                                                "breaker_half_open", "probe_failed", "saturated"};
  return kNames[static_cast<std::size_t>(c)];
}

void BackendState::throttle(TimeMs until) {
  throttles_total_.fetch_add(1, std::memory_order_relaxed);
  auto cur = throttled_until_.load(std::memory_order_relaxed);
  while (cur < until &&
         !throttled_until_.compare_exchange_weak(cur, until, std::memory_order_relaxed)) {
  }
}

void BackendState::observe(const Signals& s, TimeMs now) {
  if (s.remaining_tokens || s.remaining_requests) {
    TimeMs fresh = kRemainingFreshMs;
    if (s.reset_tokens && s.reset_tokens->count() > 0) {
      fresh = std::clamp<TimeMs>(s.reset_tokens->count(), 1'000, kRemainingMaxFreshMs);
    }
    remaining_tokens_.store(s.remaining_tokens ? *s.remaining_tokens : -1, std::memory_order_relaxed);
    remaining_requests_.store(s.remaining_requests ? *s.remaining_requests : -1,
                              std::memory_order_relaxed);
    remaining_until_.store(now + fresh, std::memory_order_relaxed);
  }
  if (s.utilization) {
    utilization_bp_.store(static_cast<std::int64_t>(std::llround(*s.utilization * 100)),
                          std::memory_order_relaxed);
  }
}

std::optional<std::int64_t> BackendState::remaining_tokens(TimeMs now) const {
  if (now >= remaining_until_.load(std::memory_order_relaxed)) return std::nullopt;
  return last_remaining_tokens();
}

std::optional<std::int64_t> BackendState::remaining_requests(TimeMs now) const {
  if (now >= remaining_until_.load(std::memory_order_relaxed)) return std::nullopt;
  return last_remaining_requests();
}

std::optional<std::int64_t> BackendState::last_remaining_tokens() const {
  auto v = remaining_tokens_.load(std::memory_order_relaxed);
  return v < 0 ? std::nullopt : std::optional(v);
}

std::optional<std::int64_t> BackendState::last_remaining_requests() const {
  auto v = remaining_requests_.load(std::memory_order_relaxed);
  return v < 0 ? std::nullopt : std::optional(v);
}

std::optional<double> BackendState::utilization() const {
  auto v = utilization_bp_.load(std::memory_order_relaxed);
  return v < 0 ? std::nullopt : std::optional(static_cast<double>(v) / 100.0);
}

bool BackendState::try_acquire(std::uint32_t cap) {
  auto prev = in_flight_.fetch_add(1, std::memory_order_relaxed);
  if (cap != 0 && prev >= static_cast<std::int64_t>(cap)) {
    in_flight_.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  return true;
}

void BackendState::release() { in_flight_.fetch_sub(1, std::memory_order_relaxed); }

bool BackendState::breaker_allows(TimeMs now) const {
  switch (breaker()) {
    case Breaker::kClosed: return true;
    case Breaker::kOpen: return now >= breaker_until();
    case Breaker::kHalfOpen: return false;
  }
  return false;
}

bool BackendState::claim(TimeMs now, bool& trial) {
  trial = false;
  auto s = breaker_.load(std::memory_order_acquire);
  if (s == static_cast<std::uint8_t>(Breaker::kClosed)) return true;
  if (s != static_cast<std::uint8_t>(Breaker::kOpen) || now < breaker_until()) return false;
  trial = breaker_.compare_exchange_strong(s, static_cast<std::uint8_t>(Breaker::kHalfOpen),
                                           std::memory_order_acq_rel);
  return trial;
}

void BackendState::open(TimeMs now, const BreakerPolicy& policy) {
  auto n = reopens_.fetch_add(1, std::memory_order_relaxed);
  TimeMs period = policy.open_ms;
  for (std::uint32_t i = 0; i < n && period < policy.max_open_ms; ++i) period *= 2;
  period = std::min(period, policy.max_open_ms);
  open_until_.store(now + period, std::memory_order_relaxed);
  breaker_.store(static_cast<std::uint8_t>(Breaker::kOpen), std::memory_order_release);
  opens_total_.fetch_add(1, std::memory_order_relaxed);
}

void BackendState::hold_open(TimeMs until) {
  auto end = open_until_.load(std::memory_order_relaxed);
  while (end < until && !open_until_.compare_exchange_weak(end, until, std::memory_order_relaxed)) {
  }
  breaker_.store(static_cast<std::uint8_t>(Breaker::kOpen), std::memory_order_release);
}

void BackendState::record(Outcome outcome, bool trial, TimeMs now, const BreakerPolicy& policy) {
  switch (outcome) {
    case Outcome::kSuccess:
      if (failures_.load(std::memory_order_relaxed) != 0) failures_.store(0, std::memory_order_relaxed);
      // Only the half-open trial closes the breaker: a request that started before it opened
      // says nothing about the backend now.
      if (trial) {
        reopens_.store(0, std::memory_order_relaxed);
        breaker_.store(static_cast<std::uint8_t>(Breaker::kClosed), std::memory_order_release);
      }
      return;
    case Outcome::kFailure: {
      if (trial) {  // the trial failed: open again, for longer
        failures_.store(0, std::memory_order_relaxed);
        open(now, policy);
        return;
      }
      auto f = failures_.fetch_add(1, std::memory_order_relaxed) + 1;
      if (f < policy.failures) return;
      auto closed = static_cast<std::uint8_t>(Breaker::kClosed);
      // Only the request that crosses the threshold on a closed breaker opens it.
      if (breaker_.compare_exchange_strong(closed, static_cast<std::uint8_t>(Breaker::kOpen),
                                           std::memory_order_acq_rel)) {
        failures_.store(0, std::memory_order_relaxed);
        open(now, policy);
      }
      return;
    }
    case Outcome::kNeutral:
      if (trial) {  // nothing learned: let the next request be the trial
        auto half = static_cast<std::uint8_t>(Breaker::kHalfOpen);
        breaker_.compare_exchange_strong(half, static_cast<std::uint8_t>(Breaker::kOpen),
                                         std::memory_order_acq_rel);
      }
      return;
  }
}

Condition BackendState::condition(TimeMs now, std::uint32_t cap) const {
  if (!probe_healthy()) return Condition::kProbeFailed;
  auto b = breaker();
  if (b == Breaker::kOpen && now < breaker_until()) return Condition::kBreakerOpen;
  if (b == Breaker::kHalfOpen) return Condition::kBreakerHalfOpen;
  if (now < throttled_until()) return Condition::kThrottled;
  if (cap != 0 && in_flight() >= static_cast<std::int64_t>(cap)) return Condition::kSaturated;
  return Condition::kAvailable;
}

std::optional<TimeMs> BackendState::recovery(TimeMs now, std::uint32_t cap, bool busy_is_now) const {
  if (!probe_healthy()) return std::nullopt;
  TimeMs busy = busy_is_now ? now : now + kShortRecoveryMs;
  TimeMs at = now;
  auto b = breaker();
  if (b == Breaker::kOpen) at = std::max(at, breaker_until());
  if (b == Breaker::kHalfOpen) at = std::max(at, busy);
  at = std::max(at, throttled_until());
  if (at == now && cap != 0 && in_flight() >= static_cast<std::int64_t>(cap)) at = busy;
  return at;
}

bool RetryBudget::try_begin_retry(double budget, unsigned min_retries) {
  auto r = retries_.fetch_add(1, std::memory_order_relaxed) + 1;
  auto active = active_.load(std::memory_order_relaxed);
  auto limit = std::max<double>(min_retries, budget * static_cast<double>(active));
  if (static_cast<double>(r) > limit) {
    retries_.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  return true;
}

}  // namespace tollgate::routing

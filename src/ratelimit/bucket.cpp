#include "tollgate/ratelimit/bucket.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>

namespace tollgate::ratelimit {

namespace {

// Nanoseconds that `n` units occupy at `per_minute` (rounded up: never more than the rate).
Nanos cost(std::int64_t n, std::int64_t per_minute) {
  if (n <= 0 || per_minute <= 0) return 0;
  long double ns = static_cast<long double>(n) * static_cast<long double>(kWindow) /
                   static_cast<long double>(per_minute);
  if (ns > 9.0e18L) return static_cast<Nanos>(9'000'000'000'000'000'000LL);
  return static_cast<Nanos>(std::ceil(ns));
}

}  // namespace

bool Bucket::try_take(std::int64_t n, Nanos now, std::int64_t per_minute, std::optional<Nanos>& wait) {
  wait.reset();
  if (n > per_minute) return false;  // never fits: the caller says so instead of waiting
  auto c = cost(n, per_minute);
  auto tat = tat_.load(std::memory_order_relaxed);
  for (;;) {
    auto next = std::max(tat, now) + c;
    if (next - now > kWindow) {
      wait = next - now - kWindow;
      return false;
    }
    if (tat_.compare_exchange_weak(tat, next, std::memory_order_relaxed)) return true;
  }
}

void Bucket::put_back(std::int64_t n, std::int64_t per_minute) {
  tat_.fetch_sub(cost(n, per_minute), std::memory_order_relaxed);
}

void Bucket::charge(std::int64_t n, Nanos now, std::int64_t per_minute) {
  auto c = cost(n, per_minute);
  auto tat = tat_.load(std::memory_order_relaxed);
  while (!tat_.compare_exchange_weak(tat, std::max(tat, now) + c, std::memory_order_relaxed)) {
  }
}

std::int64_t Bucket::available(Nanos now, std::int64_t per_minute) const {
  if (per_minute <= 0) return 0;
  auto free_ns = now + kWindow - std::max(tat_.load(std::memory_order_relaxed), now);
  if (free_ns <= 0) return 0;
  auto units = static_cast<long double>(free_ns) * static_cast<long double>(per_minute) /
               static_cast<long double>(kWindow);
  return std::min<std::int64_t>(per_minute, static_cast<std::int64_t>(units));
}

std::shared_ptr<Bucket> BucketRegistry::get(const std::string& key) {
  auto& b = buckets_[key];
  if (!b) b = std::make_shared<Bucket>();
  return b;
}

std::string_view to_string(Scope s) {
  static constexpr std::string_view kNames[] = {"client", "tenant", "deployment"};
  return kNames[static_cast<std::size_t>(s)];
}

std::string_view to_string(Unit u) { return u == Unit::kTokens ? "tokens" : "requests"; }

void add_limits(BucketRegistry& registry, Scope scope, std::string_view name,
                const config::LimitsConfig& l, std::vector<Limit>& limits,
                std::vector<std::shared_ptr<Bucket>>& keep) {
  auto prefix = std::string(to_string(scope)) + ":" + std::string(name) + ":";
  auto add = [&](Unit unit, std::int64_t per_minute) {
    if (per_minute <= 0) return;
    auto b = registry.get(prefix + std::string(to_string(unit)));
    limits.push_back({b.get(), per_minute, scope, unit, name});
    keep.push_back(std::move(b));
  };
  add(Unit::kTokens, l.tokens_per_minute);
  add(Unit::kRequests, l.requests_per_minute);
}

std::optional<Reservation::Refusal> Reservation::reserve(const std::vector<Limit>& limits,
                                                          std::int64_t tokens, Nanos now) {
  tokens_ = std::max<std::int64_t>(0, tokens);
  for (const auto& l : limits) {
    auto n = l.unit == Unit::kTokens ? tokens_ : 1;
    std::optional<Nanos> wait;
    if (!l.bucket->try_take(n, now, l.per_minute, wait)) {
      for (const auto& taken : limits_) {  // all or nothing
        taken.bucket->put_back(taken.unit == Unit::kTokens ? tokens_ : 1, taken.per_minute);
      }
      limits_.clear();
      return Refusal{&l, wait};
    }
    limits_.push_back(l);
  }
  return std::nullopt;
}

void Reservation::settle(std::int64_t used, Nanos now) {
  if (settled_) return;
  settled_ = true;
  used = std::max<std::int64_t>(0, used);
  for (const auto& l : limits_) {
    if (l.unit != Unit::kTokens) continue;  // a request stays counted
    if (used < tokens_) {
      l.bucket->put_back(tokens_ - used, l.per_minute);
    } else if (used > tokens_) {
      l.bucket->charge(used - tokens_, now, l.per_minute);
    }
  }
}

}  // namespace tollgate::ratelimit

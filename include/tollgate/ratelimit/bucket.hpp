#pragma once
// Token and request buckets for admission: GCRA (the generic cell rate algorithm) in one atomic
// each, shared by all workers, lock-free. A bucket allows `per_minute` units per minute with a
// burst of one minute's worth; units taken at admission (a reservation) are settled afterwards:
// the unused part goes back, an overrun becomes debt. See docs/design/rate-limiting.md.

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tollgate/config/config.hpp"
#include "tollgate/core/clock.hpp"

namespace tollgate::ratelimit {

using core::Nanos;          // steady-clock nanoseconds (injected: tests use a fake clock)
using core::steady_now_ns;  // the one clock (tollgate/core/clock.hpp)

inline constexpr Nanos kWindow = 60'000'000'000;  // the burst: one minute's worth

class alignas(64) Bucket {
 public:
  /// Takes `n` units at `now` unless the bucket holds fewer; then `wait` is how long until it
  /// would hold `n` (n above per_minute never fits: wait is then nullopt). Thread: any.
  bool try_take(std::int64_t n, Nanos now, std::int64_t per_minute, std::optional<Nanos>& wait);
  /// Returns `n` unused units (a reservation larger than the use). Thread: any.
  void put_back(std::int64_t n, std::int64_t per_minute);
  /// Takes `n` more units without a check (a use larger than the reservation): debt that later
  /// admissions wait for. Thread: any.
  void charge(std::int64_t n, Nanos now, std::int64_t per_minute);
  /// Units that could be taken now (0 while in debt). Thread: any.
  std::int64_t available(Nanos now, std::int64_t per_minute) const;

 private:
  std::atomic<Nanos> tat_{0};  // theoretical arrival time of the next unit
};

/// Every bucket of the process, by key ("client:NAME:tokens", ...), so a reload keeps their
/// state. Thread: control (get); buckets themselves: any.
class BucketRegistry {
 public:
  std::shared_ptr<Bucket> get(const std::string& key);

 private:
  std::unordered_map<std::string, std::shared_ptr<Bucket>> buckets_;
};

/// Which limit a bucket enforces (for messages, headers and metrics).
enum class Scope : std::uint8_t { kClient, kTenant, kDeployment };
enum class Unit : std::uint8_t { kTokens, kRequests };
std::string_view to_string(Scope s);
std::string_view to_string(Unit u);

/// One bucket with its rate, as the request path sees it.
struct Limit {
  Bucket* bucket = nullptr;
  std::int64_t per_minute = 0;
  Scope scope = Scope::kClient;
  Unit unit = Unit::kTokens;
  std::string_view name;  // the client, tenant or deployment (points into the config)
};

/// The per-minute limits of a client, tenant or deployment as configured, with their buckets from
/// `registry` (the same key across reloads: `scope:name:unit`). Appends to `limits` and keeps
/// the buckets alive in `keep`. `name` must outlive `limits` (it points into the config).
void add_limits(BucketRegistry& registry, Scope scope, std::string_view name,
                const config::LimitsConfig& l, std::vector<Limit>& limits,
                std::vector<std::shared_ptr<Bucket>>& keep);

/// Units held from the buckets for one request, to settle when it ends.
class Reservation {
 public:
  struct Refusal {
    const Limit* limit = nullptr;  // the one that had no room
    std::optional<Nanos> wait;     // when it would; nullopt: never (larger than the limit)
  };
  /// Takes `tokens` from every token limit and 1 from every request limit, all or nothing.
  /// Returns the refusal when one of them lacks room (nothing is then held).
  std::optional<Refusal> reserve(const std::vector<Limit>& limits, std::int64_t tokens, Nanos now);
  /// Settles the token reservation against `used` tokens (refund or debt). Once.
  void settle(std::int64_t used, Nanos now);
  bool held() const { return !limits_.empty(); }
  std::int64_t tokens() const { return tokens_; }

 private:
  std::vector<Limit> limits_;  // those taken
  std::int64_t tokens_ = 0;
  bool settled_ = false;
};

}  // namespace tollgate::ratelimit

#include "cluster/shared_limits.hpp"

#include <algorithm>
#include <cmath>

#include "cluster/limit_scripts.hpp"

namespace tollgate::cluster {

namespace {

using ratelimit::Unit;

constexpr std::int64_t kWindowUs = 60'000'000;
constexpr ratelimit::UnixMs kBudgetKeyGraceMs = 86'400'000;  // a day past the period's end

const RedisScript& reserve_script() {
  static const RedisScript s{std::string(kReserveScript)};
  return s;
}
const RedisScript& release_script() {
  static const RedisScript s{std::string(kReleaseScript)};
  return s;
}
const RedisScript& flush_script() {
  static const RedisScript s{std::string(kFlushScript)};
  return s;
}

// The script's arguments: KEYS then ARGV, as strings (argv views point into them).
struct ScriptArgs {
  std::vector<std::string> keys, args;
  std::vector<std::string_view> key_views() const { return {keys.begin(), keys.end()}; }
  std::vector<std::string_view> arg_views() const { return {args.begin(), args.end()}; }
};

ScriptArgs reserve_args(const LimitKeys& names, const Demand& d, const Topups& extra, ratelimit::UnixMs now) {
  ScriptArgs a;
  a.keys.push_back(names.hold(d.id));
  a.args.push_back(std::to_string(d.limits.size()));
  for (std::size_t i = 0; i < d.limits.size(); ++i) {
    const auto& l = d.limits[i];
    a.keys.push_back(names.bucket(l));
    a.args.push_back(std::to_string(cost_us(units_taken(l, d.tokens), l.per_minute)));
    a.args.push_back(std::to_string(i < extra.buckets.size() ? cost_us(extra.buckets[i], l.per_minute) : 0));
  }
  if (d.budgets == nullptr) return a;
  for (std::size_t j = 0; j < d.budgets->size(); ++j) {
    const auto& b = (*d.budgets)[j];
    a.keys.push_back(names.budget(b, ratelimit::period_index(b.period, now)));
    a.args.push_back(std::to_string(budget_amount(b, d.tokens, d.nano_usd)));
    a.args.push_back(std::to_string(j < extra.budgets.size() ? extra.budgets[j] : 0));
    a.args.push_back(std::to_string(b.limit));
    a.args.push_back(std::to_string(key_expiry(b, now)));
  }
  return a;
}

// A limit the request can never fit (more than a minute's worth): refused without Redis.
std::optional<std::size_t> never_fits(const Demand& d) {
  for (std::size_t i = 0; i < d.limits.size(); ++i) {
    const auto& l = d.limits[i];
    if (units_taken(l, d.tokens) > l.per_minute) return i;
  }
  return std::nullopt;
}

std::int64_t element(const RedisReply& r, std::size_t i) {
  return i < r.elements.size() && r.elements[i].kind == RedisReply::Kind::kInteger ? r.elements[i].integer : -1;
}

}  // namespace

std::int64_t units_taken(const ratelimit::Limit& l, std::int64_t tokens) {
  return l.unit == Unit::kTokens ? tokens : 1;
}

std::int64_t budget_amount(const ratelimit::BudgetLimit& b, std::int64_t tokens, std::int64_t nano_usd) {
  return b.measure == ratelimit::Measure::kTokens ? tokens : nano_usd;
}

ratelimit::UnixMs key_expiry(const ratelimit::BudgetLimit& b, ratelimit::UnixMs now) {
  return ratelimit::period_end(b.period, now) + kBudgetKeyGraceMs;
}

SharedHold hold_for(const LimitKeys& names, const Demand& d, ratelimit::UnixMs now) {
  SharedHold h;
  h.taken = true;
  h.tokens = std::max<std::int64_t>(0, d.tokens);
  for (const auto& l : d.limits) {
    if (l.unit == Unit::kTokens) h.buckets.push_back({names.bucket(l), l.per_minute});
  }
  if (d.budgets == nullptr) return h;
  for (const auto& b : *d.budgets) {
    h.budgets.push_back({b, budget_amount(b, d.tokens, d.nano_usd), ratelimit::period_index(b.period, now)});
  }
  return h;
}

namespace {

// The outcome the reserve script's reply `r` says (see kReserveScript).
ReserveOutcome read_reserve(const RedisReply& r, const LimitKeys& names, const Demand& d, const Topups& extra,
                            ratelimit::UnixMs now) {
  ReserveOutcome out;
  const auto& limits = d.limits;
  if (r.kind != RedisReply::Kind::kArray || r.elements.empty()) {
    out.problem = "unexpected reply from the reserve script: " + std::string(to_string(r.kind)) + " " + r.text;
    return out;
  }
  auto verdict = element(r, 0);
  out.remaining.assign(limits.size(), -1);
  auto nj = d.budgets == nullptr ? 0 : d.budgets->size();
  if (verdict == 0 && r.elements.size() == 1 + 2 * limits.size() + nj) {
    out.kind = ReserveOutcome::Kind::kHeld;
    for (std::size_t i = 0; i < limits.size(); ++i) out.remaining[i] = units_of(element(r, i + 1), limits[i].per_minute);
    out.granted.buckets.assign(limits.size(), 0);
    out.granted.budgets.assign(nj, 0);
    for (std::size_t i = 0; i < limits.size(); ++i) {
      if (element(r, 1 + limits.size() + i) == 1) out.granted.buckets[i] = extra.buckets[i];
    }
    for (std::size_t j = 0; j < nj; ++j) {
      if (element(r, 1 + 2 * limits.size() + j) == 1) out.granted.budgets[j] = extra.budgets[j];
    }
    out.hold = hold_for(names, d, now);
    return out;
  }
  auto index = element(r, 1) - 1;
  if (verdict == 1 && index >= 0 && static_cast<std::size_t>(index) < limits.size()) {
    out.kind = ReserveOutcome::Kind::kLimited;
    out.limited = ratelimit::Reservation::Refusal{&limits[index], element(r, 2) * 1000};
    out.remaining[index] = units_of(element(r, 3), limits[index].per_minute);
    return out;
  }
  if (verdict == 2 && d.budgets != nullptr && index >= 0 && static_cast<std::size_t>(index) < d.budgets->size()) {
    out.kind = ReserveOutcome::Kind::kOverBudget;
    out.over_budget = ratelimit::BudgetHold::Refusal{&(*d.budgets)[index], element(r, 2) == 1, element(r, 3)};
    return out;
  }
  out.problem = "unexpected reply from the reserve script";
  return out;
}

}  // namespace

SharedHold use_only(const Demand& d, ratelimit::UnixMs now) {
  SharedHold h;
  if (d.budgets == nullptr) return h;
  for (const auto& b : *d.budgets) h.budgets.push_back({b, 0, ratelimit::period_index(b.period, now)});
  return h;
}

std::string LimitKeys::bucket(const ratelimit::Limit& l) const {
  std::string k = prefix_;
  k.append("bucket:").append(ratelimit::to_string(l.scope)).append(":").append(l.name).append(":");
  k.append(ratelimit::to_string(l.unit));
  return k;
}

std::string LimitKeys::budget(const ratelimit::BudgetLimit& b, std::int64_t period_index) const {
  std::string k = prefix_;
  k.append("budget:").append(ratelimit::to_string(b.scope)).append(":").append(b.name).append(":");
  k.append(ratelimit::to_string(b.period)).append(":").append(ratelimit::to_string(b.measure)).append(":");
  k.append(std::to_string(period_index));
  return k;
}

std::int64_t cost_us(std::int64_t n, std::int64_t per_minute) {
  if (n <= 0 || per_minute <= 0) return 0;
  long double us = static_cast<long double>(n) * kWindowUs / static_cast<long double>(per_minute);
  return us > 9.0e15L ? 9'000'000'000'000'000 : static_cast<std::int64_t>(std::ceil(us));
}

std::int64_t units_of(std::int64_t free_us, std::int64_t per_minute) {
  if (free_us <= 0 || per_minute <= 0) return 0;
  auto units = static_cast<long double>(free_us) * per_minute / kWindowUs;
  return std::min<std::int64_t>(per_minute, static_cast<std::int64_t>(units));
}

net::awaitable<ReserveOutcome> reserve_shared(RedisClient& redis, const LimitKeys& names, const Demand& d,
                                             const Topups& extra, ratelimit::UnixMs now) {
  if (auto i = never_fits(d)) {
    ReserveOutcome out;
    out.kind = ReserveOutcome::Kind::kLimited;
    out.limited = ratelimit::Reservation::Refusal{&d.limits[*i], std::nullopt};
    out.remaining.assign(d.limits.size(), -1);
    co_return out;
  }
  // Top-ups only where both sides agree on the demand's shape.
  Topups none;
  bool shaped = extra.buckets.size() == d.limits.size() &&
                extra.budgets.size() == (d.budgets == nullptr ? 0 : d.budgets->size());
  const auto& topups = shaped ? extra : none;
  auto a = reserve_args(names, d, topups, now);
  auto keys = a.key_views();
  auto args = a.arg_views();
  auto result = co_await redis.eval(reserve_script(), keys, args);
  if (!result.ok()) {
    ReserveOutcome out;
    out.problem = std::string(to_string(*result.failure));
    out.maybe_applied = *result.failure == RedisFailure::kTimeout;
    co_return out;
  }
  Topups asked = topups;
  asked.buckets.resize(d.limits.size(), 0);
  asked.budgets.resize(d.budgets == nullptr ? 0 : d.budgets->size(), 0);
  co_return read_reserve(result.reply, names, d, asked, now);
}

net::awaitable<std::optional<RedisFailure>> release_shared(RedisClient& redis, const LimitKeys& names,
                                                          std::string_view id) {
  auto hold = names.hold(id);
  std::string_view keys[] = {hold};
  auto result = co_await redis.eval(release_script(), keys, {});
  if (!result.ok()) co_return result.failure;
  bool known = result.reply.kind == RedisReply::Kind::kNil || result.reply.kind == RedisReply::Kind::kInteger;
  co_return known ? std::nullopt : std::optional<RedisFailure>(RedisFailure::kProtocol);
}

namespace {

ScriptArgs flush_args(std::string_view seq_key, const Flush& f) {
  ScriptArgs a;
  a.keys.emplace_back(seq_key);
  a.args.push_back(std::to_string(f.buckets.size()));
  a.args.push_back(std::to_string(f.budgets.size()));
  a.args.push_back(std::to_string(f.seq));
  for (const auto& b : f.buckets) {
    a.keys.push_back(b.key);
    a.args.push_back(std::to_string(b.delta_us));
  }
  for (const auto& b : f.budgets) {
    a.keys.push_back(b.key);
    a.args.push_back(std::to_string(std::max<std::int64_t>(0, b.release)));
    a.args.push_back(std::to_string(std::max<std::int64_t>(0, b.use)));
    a.args.push_back(std::to_string(b.warn_level));
    a.args.push_back(std::to_string(b.expiry));
  }
  a.keys.insert(a.keys.end(), f.forget.begin(), f.forget.end());
  return a;
}

}  // namespace

net::awaitable<SettleOutcome> flush_shared(RedisClient& redis, std::string_view seq_key, const Flush& f) {
  auto a = flush_args(seq_key, f);
  auto keys = a.key_views();
  auto args = a.arg_views();
  auto result = co_await redis.eval(flush_script(), keys, args);
  SettleOutcome out;
  if (result.ok() && result.reply.kind == RedisReply::Kind::kNil) co_return out;  // applied before
  if (!result.ok() || result.reply.kind != RedisReply::Kind::kArray ||
      result.reply.elements.size() != f.budgets.size()) {
    out.failure = result.ok() ? RedisFailure::kProtocol : *result.failure;
    co_return out;
  }
  for (std::size_t j = 0; j < f.budgets.size(); ++j) {
    if (element(result.reply, j) == 1) out.crossed.push_back(f.budgets[j].name);
  }
  co_return out;
}

}  // namespace tollgate::cluster

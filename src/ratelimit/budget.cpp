#include "tollgate/ratelimit/budget.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>

namespace tollgate::ratelimit {

namespace {

constexpr UnixMs kDayMs = 86'400'000;

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  auto q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

std::chrono::year_month_day civil(UnixMs t) {
  return std::chrono::year_month_day{std::chrono::sys_days{std::chrono::days{floor_div(t, kDayMs)}}};
}

UnixMs to_ms(std::chrono::year_month_day ymd) {
  return std::chrono::sys_days{ymd}.time_since_epoch().count() * kDayMs;
}

}  // namespace

std::string_view to_string(Period p) { return p == Period::kDay ? "day" : "month"; }
std::string_view to_string(Measure m) { return m == Measure::kTokens ? "tokens" : "usd"; }

std::int64_t period_index(Period p, UnixMs t) {
  if (p == Period::kDay) return floor_div(t, kDayMs);
  auto ymd = civil(t);
  return (static_cast<int>(ymd.year()) - 1970) * 12 + static_cast<int>(unsigned(ymd.month())) - 1;
}

UnixMs period_start(Period p, UnixMs t) {
  if (p == Period::kDay) return floor_div(t, kDayMs) * kDayMs;
  auto ymd = civil(t);
  return to_ms(ymd.year() / ymd.month() / std::chrono::day{1});
}

UnixMs period_end(Period p, UnixMs t) {
  if (p == Period::kDay) return period_start(p, t) + kDayMs;
  auto ymd = civil(t);
  auto next = std::chrono::year_month{ymd.year(), ymd.month()} + std::chrono::months{1};
  return to_ms(next / std::chrono::day{1});
}

void Budget::roll(Period p, UnixMs now) {
  auto current = period_index(p, now);
  if (current <= period_) return;  // a clock stepping back keeps the later period
  period_ = current;
  used_ = 0;
  reserved_ = 0;  // reservations of the last period are released when they settle
  warned_ = false;
}

Budget::Verdict Budget::reserve(std::int64_t amount, std::int64_t limit, Period p, UnixMs now,
                                std::int64_t& period) {
  std::lock_guard lock(m_);
  roll(p, now);
  period = period_;
  // Written so nothing overflows: amount and limit are at most ~1e18, used_ and reserved_ are
  // sums of admitted amounts.
  if (amount > limit || used_ > limit - amount) return Verdict::kExhausted;
  if (reserved_ > limit - amount - used_) return Verdict::kBusy;
  reserved_ += amount;
  return Verdict::kOk;
}

bool Budget::settle(std::int64_t reserved, std::int64_t period, std::int64_t used,
                    std::int64_t warn_level, Period p, UnixMs now) {
  std::lock_guard lock(m_);
  roll(p, now);
  if (period == period_) reserved_ = std::max<std::int64_t>(0, reserved_ - reserved);
  used_ += used;
  if (!warned_ && warn_level > 0 && used_ >= warn_level) {
    warned_ = true;
    return true;
  }
  return false;
}

void Budget::seed(std::int64_t used, std::int64_t period) {
  std::lock_guard lock(m_);
  if (period < period_) return;
  if (period > period_) {
    period_ = period;
    used_ = 0;
    reserved_ = 0;
    warned_ = false;
  }
  used_ += used;
}

std::int64_t Budget::used(Period p, UnixMs now) const {
  std::lock_guard lock(m_);
  return period_ == period_index(p, now) ? used_ : 0;
}

std::string BudgetRegistry::key(Scope scope, std::string_view name, Period p, Measure m) {
  std::string k(to_string(scope));
  k += ':';
  k += name;
  k += ':';
  k += to_string(p);
  k += ':';
  k += to_string(m);
  return k;
}

std::shared_ptr<Budget> BudgetRegistry::get(const std::string& key) {
  auto& b = budgets_[key];
  if (!b) b = std::make_shared<Budget>();
  return b;
}

void add_budgets(BudgetRegistry& registry, Scope scope, const std::string& name,
                 const config::BudgetConfig& b, std::vector<BudgetLimit>& limits,
                 std::vector<std::shared_ptr<Budget>>& keep) {
  auto add = [&](Period p, Measure m, std::int64_t limit) {
    if (limit <= 0) return;
    auto counter = registry.get(BudgetRegistry::key(scope, name, p, m));
    auto warn = static_cast<std::int64_t>(std::ceil(static_cast<double>(limit) * b.warn_at));
    limits.push_back({counter.get(), limit, warn, p, m, scope, name});
    keep.push_back(std::move(counter));
  };
  auto nano = [](double usd) { return static_cast<std::int64_t>(std::llround(usd * 1e9)); };
  add(Period::kDay, Measure::kTokens, b.tokens_per_day);
  add(Period::kMonth, Measure::kTokens, b.tokens_per_month);
  add(Period::kDay, Measure::kNanoUsd, nano(b.usd_per_day));
  add(Period::kMonth, Measure::kNanoUsd, nano(b.usd_per_month));
}

std::optional<BudgetHold::Refusal> BudgetHold::reserve(const std::vector<BudgetLimit>& limits,
                                                        std::int64_t tokens, std::int64_t nano_usd,
                                                        UnixMs now) {
  for (const auto& l : limits) {
    auto amount = l.measure == Measure::kTokens ? tokens : nano_usd;
    std::int64_t period = 0;
    auto verdict = l.budget->reserve(amount, l.limit, l.period, now, period);
    if (verdict != Budget::Verdict::kOk) {
      release(now);
      return Refusal{&l, verdict == Budget::Verdict::kExhausted, l.budget->used(l.period, now)};
    }
    held_.push_back({l, amount, period});
  }
  return std::nullopt;
}

void BudgetHold::release(UnixMs now) {
  if (settled_) return;
  for (const auto& h : held_) h.limit.budget->settle(h.amount, h.period, 0, 0, h.limit.period, now);
  held_.clear();
}

void BudgetHold::settle(std::int64_t tokens, std::int64_t nano_usd, UnixMs now,
                        std::vector<const BudgetLimit*>* crossed) {
  if (settled_) return;
  settled_ = true;
  for (const auto& h : held_) {
    auto used = h.limit.measure == Measure::kTokens ? tokens : nano_usd;
    if (h.limit.budget->settle(h.amount, h.period, used, h.limit.warn_level, h.limit.period, now) &&
        crossed != nullptr) {
      crossed->push_back(&h.limit);
    }
  }
}

namespace {
// Nano-USD as an integer, saturated (an absurd request costs "everything", never wraps).
std::int64_t to_nano(double c) {
  constexpr double kMax = 4e18;
  return c >= kMax ? static_cast<std::int64_t>(kMax) : static_cast<std::int64_t>(std::llround(c));
}
}  // namespace

std::int64_t Price::cost(const core::Usage& u) const {
  auto cached = std::min(u.cached, u.prompt);
  auto reasoning = std::min(u.reasoning, u.completion);
  return to_nano(static_cast<double>(u.prompt - cached) * prompt + static_cast<double>(cached) * this->cached +
                 static_cast<double>(u.completion - reasoning) * completion +
                 static_cast<double>(reasoning) * this->reasoning);
}

std::int64_t Price::ceiling(std::int64_t prompt_tokens, std::int64_t allowance) const {
  return to_nano(static_cast<double>(prompt_tokens) * prompt +
                 static_cast<double>(allowance) * std::max(completion, reasoning));
}

}  // namespace tollgate::ratelimit

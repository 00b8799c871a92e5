#include "cluster/lease_book.hpp"

#include <algorithm>
#include <cmath>

namespace tollgate::cluster {

namespace {

// Units of `limit` one top-up asks for: `share` of it, none when that would not hold one request
// needing `need` (a lease no request like this one can use only strands the units).
std::int64_t top_up(double share, std::int64_t limit, std::int64_t need) {
  if (share <= 0 || limit <= 0) return 0;
  auto units = static_cast<std::int64_t>(std::floor(share * static_cast<double>(limit)));
  return units >= need && units > 0 ? units : 0;
}

// The change in µs that giving back `back` units and owing `owe` makes to a bucket of `per_minute`.
std::int64_t bucket_delta(std::int64_t owe, std::int64_t back, std::int64_t per_minute) {
  auto net = owe - back;
  return net >= 0 ? cost_us(net, per_minute) : -cost_us(-net, per_minute);
}

}  // namespace

bool LeaseBook::live(ratelimit::UnixMs granted_at, ratelimit::UnixMs now) const {
  return !draining_ && granted_at != 0 && now - granted_at < terms_.ttl.count();
}

std::optional<ReserveOutcome> LeaseBook::take(const Demand& d, ratelimit::UnixMs now) {
  if (terms_.share <= 0 || draining_) return std::nullopt;
  std::vector<BucketLease*> buckets;
  buckets.reserve(d.limits.size());
  for (const auto& l : d.limits) {
    auto it = buckets_.find(keys_.bucket(l));
    if (it == buckets_.end() || !live(it->second.granted_at, now) || it->second.avail < units_taken(l, d.tokens)) {
      return std::nullopt;
    }
    buckets.push_back(&it->second);
  }
  std::vector<BudgetLease*> budgets;
  if (d.budgets != nullptr) {
    budgets.reserve(d.budgets->size());
    for (const auto& b : *d.budgets) {
      auto it = budgets_.find(keys_.budget(b, ratelimit::period_index(b.period, now)));
      if (it == budgets_.end() || !live(it->second.granted_at, now) ||
          it->second.avail < budget_amount(b, d.tokens, d.nano_usd)) {
        return std::nullopt;
      }
      budgets.push_back(&it->second);
    }
  }
  ReserveOutcome out;
  out.kind = ReserveOutcome::Kind::kHeld;
  out.remaining.resize(d.limits.size());
  for (std::size_t i = 0; i < buckets.size(); ++i) {
    buckets[i]->avail -= units_taken(d.limits[i], d.tokens);
    out.remaining[i] = std::max<std::int64_t>(0, buckets[i]->room + buckets[i]->avail);
  }
  for (std::size_t j = 0; j < budgets.size(); ++j) budgets[j]->avail -= budget_amount((*d.budgets)[j], d.tokens, d.nano_usd);
  out.hold = hold_for(keys_, d, now);
  return out;
}

Topups LeaseBook::topups(const Demand& d, ratelimit::UnixMs now) const {
  Topups t;
  t.buckets.assign(d.limits.size(), 0);
  t.budgets.assign(d.budgets == nullptr ? 0 : d.budgets->size(), 0);
  if (terms_.share <= 0 || draining_) return t;
  for (std::size_t i = 0; i < d.limits.size(); ++i) {
    const auto& l = d.limits[i];
    auto need = units_taken(l, d.tokens);
    auto it = buckets_.find(keys_.bucket(l));
    bool has_room = it != buckets_.end() && live(it->second.granted_at, now) && it->second.avail >= need;
    if (!has_room) t.buckets[i] = top_up(terms_.share, l.per_minute, need);
  }
  for (std::size_t j = 0; j < t.budgets.size(); ++j) {
    const auto& b = (*d.budgets)[j];
    auto need = budget_amount(b, d.tokens, d.nano_usd);
    auto it = budgets_.find(keys_.budget(b, ratelimit::period_index(b.period, now)));
    bool has_room = it != budgets_.end() && live(it->second.granted_at, now) && it->second.avail >= need;
    if (!has_room) t.budgets[j] = top_up(terms_.share, b.limit, need);
  }
  return t;
}

LeaseBook::BudgetLease& LeaseBook::budget_lease(const ratelimit::BudgetLimit& b, std::int64_t period,
                                                ratelimit::UnixMs now) {
  auto [it, fresh] = budgets_.try_emplace(keys_.budget(b, period));
  auto& l = it->second;
  if (fresh) {
    l.warn_level = b.warn_level;
    l.name = BudgetName::of(b);
  }
  l.expiry = std::max(l.expiry, key_expiry(b, now));
  return l;
}

void LeaseBook::granted(const Demand& d, const ReserveOutcome& held, ratelimit::UnixMs now) {
  for (std::size_t i = 0; i < d.limits.size() && i < held.granted.buckets.size(); ++i) {
    auto units = held.granted.buckets[i];
    auto key = keys_.bucket(d.limits[i]);
    auto it = buckets_.find(key);
    if (units <= 0) {
      if (it != buckets_.end() && i < held.remaining.size()) it->second.room = held.remaining[i];
      continue;
    }
    auto& l = it != buckets_.end() ? it->second : buckets_[std::move(key)];
    // A grant starts the lease afresh (what it held goes back): a lease holds at most one
    // top-up, of units reserved within ttl.
    l.give_back += l.avail;
    l.avail = l.cap = units;
    l.granted_at = now;
    l.per_minute = d.limits[i].per_minute;
    if (i < held.remaining.size()) l.room = held.remaining[i];
  }
  for (std::size_t j = 0; d.budgets != nullptr && j < d.budgets->size() && j < held.granted.budgets.size(); ++j) {
    auto units = held.granted.budgets[j];
    if (units <= 0) continue;
    const auto& b = (*d.budgets)[j];
    auto& l = budget_lease(b, ratelimit::period_index(b.period, now), now);
    l.release += l.avail;
    l.avail = l.cap = units;
    l.granted_at = now;
  }
  forget_.push_back(keys_.hold(d.id));
}

// Units a request did not use: back into the lease while it is live and below its cap, the rest
// to the store with the next flush.
template <class Lease>
void LeaseBook::keep(Lease& l, std::int64_t units, std::int64_t& back, ratelimit::UnixMs now) const {
  if (units <= 0) return;
  auto room = live(l.granted_at, now) ? std::max<std::int64_t>(0, l.cap - l.avail) : 0;
  auto put = std::min(units, room);
  l.avail += put;
  back += units - put;
}

void LeaseBook::settle(const SharedHold& hold, std::int64_t tokens, std::int64_t nano_usd, ratelimit::UnixMs now) {
  tokens = std::max<std::int64_t>(0, tokens);
  nano_usd = std::max<std::int64_t>(0, nano_usd);
  for (const auto& b : hold.buckets) {
    auto& l = buckets_[b.key];
    if (l.per_minute == 0) l.per_minute = b.per_minute;
    if (tokens > hold.tokens) {
      l.owe += tokens - hold.tokens;
    } else {
      keep(l, hold.tokens - tokens, l.give_back, now);
    }
  }
  for (const auto& b : hold.budgets) {
    auto use = budget_amount(b.limit, tokens, nano_usd);
    auto current = ratelimit::period_index(b.limit.period, now);
    // The reserved units the use takes (a use in a later period takes none of the earlier one's).
    auto consumed = b.period == current ? std::min(b.amount, use) : 0;
    auto& reserved_in = budget_lease(b.limit, b.period, now);
    reserved_in.release += consumed;
    keep(reserved_in, b.amount - consumed, reserved_in.release, now);
    budget_lease(b.limit, current, now).use += use;
  }
}

Flush LeaseBook::flush(ratelimit::UnixMs now, bool all) {
  Flush f;
  for (auto it = buckets_.begin(); it != buckets_.end();) {
    auto& l = it->second;
    bool ends = all || !live(l.granted_at, now);
    auto back = l.give_back + (ends ? l.avail : 0);
    if (auto delta = bucket_delta(l.owe, back, l.per_minute); delta != 0) f.buckets.push_back({it->first, delta});
    l.give_back = l.owe = 0;
    if (ends) l.avail = 0;
    it = ends ? buckets_.erase(it) : std::next(it);
  }
  for (auto it = budgets_.begin(); it != budgets_.end();) {
    auto& l = it->second;
    bool ends = all || !live(l.granted_at, now);
    auto release = l.release + (ends ? l.avail : 0);
    if (release != 0 || l.use != 0) {
      f.budgets.push_back({it->first, release, l.use, l.warn_level, l.expiry, l.name});
    }
    l.release = l.use = 0;
    if (ends) l.avail = 0;
    it = ends ? budgets_.erase(it) : std::next(it);
  }
  f.forget = std::move(forget_);
  forget_.clear();
  if (!f.empty()) f.seq = ++seq_;
  return f;
}

std::size_t LeaseBook::pending() const {
  auto n = forget_.empty() ? 0 : 1;
  for (const auto& [key, l] : buckets_) n += l.avail != 0 || l.give_back != 0 || l.owe != 0;
  for (const auto& [key, l] : budgets_) n += l.avail != 0 || l.release != 0 || l.use != 0;
  return static_cast<std::size_t>(n);
}

std::size_t LeaseBook::owed() const {
  std::size_t n = 0;
  for (const auto& [key, l] : buckets_) n += l.owe != 0;
  for (const auto& [key, l] : budgets_) n += l.use != 0;
  return n;
}

}  // namespace tollgate::cluster

#include "tollgate/routing/balancer.hpp"

#include <algorithm>
#include <boost/container/small_vector.hpp>

namespace tollgate::routing {

namespace {

using Candidates = boost::container::small_vector<Member, 16>;

bool has_room(const BackendState& s, TimeMs now, std::int64_t need) {
  if (auto r = s.remaining_requests(now); r && *r == 0) return false;
  if (need <= 0) return true;
  auto t = s.remaining_tokens(now);
  return !t || *t >= need;
}

// Weighted draw; `skip` (index) is left out.
std::size_t draw(const Candidates& c, Rng& rng, std::size_t skip) {
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < c.size(); ++i) {
    if (i != skip) total += c[i].weight;
  }
  auto r = rng.below(total);
  for (std::size_t i = 0; i < c.size(); ++i) {
    if (i == skip) continue;
    if (r < c[i].weight) return i;
    r -= c[i].weight;
  }
  return skip == 0 && c.size() > 1 ? 1 : 0;  // unreachable with positive weights
}

// Power of two choices, weighted: two distinct weighted draws; the second replaces the first
// only when the first carries more than one request per unit of weight beyond what the second
// would carry with this request added (n_a/w_a - 1 > (n_b+1)/w_b). Comparing n/w directly, as
// the textbook does, splits 3:1 weights 50/50 at two requests in flight (integer loads cannot
// be 1.5:0.5); with the slack, traffic follows the weights at light and moderate load (within a
// few percent, see balancer_test) while a backend that piles up requests (slow, or stuck) is
// avoided.
std::size_t two_choices(const Candidates& c, std::span<const Slot> slots, Rng& rng) {
  if (c.size() == 1) return 0;
  auto a = draw(c, rng, c.size());
  auto b = draw(c, rng, a);
  auto n_a = slots[c[a].backend].state->in_flight();
  auto n_b = slots[c[b].backend].state->in_flight();
  auto w_a = static_cast<std::int64_t>(c[a].weight);
  auto w_b = static_cast<std::int64_t>(c[b].weight);
  return n_a * w_b > (n_b + 1) * w_a + w_a * w_b ? b : a;
}

}  // namespace

bool Route::contains(std::uint32_t backend) const {
  for (const auto& t : tiers) {
    for (const auto& m : t) {
      if (m.backend == backend) return true;
    }
  }
  return false;
}

std::size_t Route::size() const {
  std::size_t n = 0;
  for (const auto& t : tiers) n += t.size();
  return n;
}

std::optional<Lease> pick(const Route& route, std::span<const Slot> slots, const PickRequest& req,
                          Rng& rng) {
  for (std::uint32_t tier = 0; tier < route.tiers.size(); ++tier) {
    Candidates all;
    for (const auto& m : route.tiers[tier]) {
      if (req.only && m.backend != *req.only) continue;
      if (m.backend < req.tried.size() && req.tried[m.backend] != 0) continue;
      if (!req.allowed.empty() && (m.backend >= req.allowed.size() || req.allowed[m.backend] == 0)) continue;
      const auto& slot = slots[m.backend];
      if (!slot.state->available(req.now)) continue;
      if (slot.max_in_flight != 0 &&
          slot.state->in_flight() >= static_cast<std::int64_t>(slot.max_in_flight)) {
        continue;
      }
      all.push_back(m);
    }
    while (!all.empty()) {
      Candidates roomy;
      for (const auto& m : all) {
        if (has_room(*slots[m.backend].state, req.now, req.need_tokens)) roomy.push_back(m);
      }
      const auto& pool = roomy.empty() ? all : roomy;
      auto chosen = pool[two_choices(pool, slots, rng)];
      auto& slot = slots[chosen.backend];
      bool trial = false;
      if (slot.state->try_acquire(slot.max_in_flight)) {
        if (slot.state->claim(req.now, trial)) return Lease{chosen.backend, tier, trial};
        slot.state->release();
      }
      // Lost a race (cap reached or another request took the half-open trial): drop it.
      all.erase(std::find_if(all.begin(), all.end(),
                             [&](const Member& m) { return m.backend == chosen.backend; }));
    }
  }
  return std::nullopt;
}

std::optional<TimeMs> earliest_recovery(const Route& route, std::span<const Slot> slots, TimeMs now,
                                        std::optional<std::uint32_t> only,
                                        std::span<const char> allowed, bool busy_is_now) {
  std::optional<TimeMs> best;
  for (const auto& t : route.tiers) {
    for (const auto& m : t) {
      if (only && m.backend != *only) continue;
      if (!allowed.empty() && (m.backend >= allowed.size() || allowed[m.backend] == 0)) continue;
      auto r = slots[m.backend].state->recovery(now, slots[m.backend].max_in_flight, busy_is_now);
      if (r && (!best || *r < *best)) best = r;
    }
  }
  return best;
}

std::int64_t expected_tokens(std::size_t body_bytes, std::int64_t max_output, std::int64_t choices) {
  auto prompt = static_cast<std::int64_t>((body_bytes + 3) / 4);
  auto output = max_output > 0 ? max_output : 16;
  return prompt + output * std::max<std::int64_t>(1, choices);
}

}  // namespace tollgate::routing

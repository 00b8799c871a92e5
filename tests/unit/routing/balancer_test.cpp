// The balancer and the shared backend state, driven with a fake clock and a seeded generator.
#include "tollgate/routing/balancer.hpp"

#include <gtest/gtest.h>

#include <array>
#include <deque>
#include <vector>

namespace tollgate::routing {
namespace {

struct Fixture {
  std::deque<BackendState> states;
  std::vector<Slot> slots;
  Route route;
  Rng rng{42};
  TimeMs now = 1'000'000;
  BreakerPolicy policy{3, 1'000, 8'000};

  explicit Fixture(std::vector<std::vector<std::pair<std::uint32_t, std::uint32_t>>> tiers,
                   std::size_t backends, std::uint32_t cap = 0) {
    for (std::size_t i = 0; i < backends; ++i) {
      states.emplace_back();
      slots.push_back(Slot{&states.back(), cap});
    }
    for (const auto& t : tiers) {
      auto& tier = route.tiers.emplace_back();
      for (auto [b, w] : t) tier.push_back(Member{b, w});
    }
  }
  std::optional<Lease> pick(std::int64_t need = 0, std::vector<char> tried = {},
                            std::optional<std::uint32_t> only = std::nullopt) {
    tried.resize(slots.size(), 0);
    return routing::pick(route, slots, PickRequest{now, need, tried, only}, rng);
  }
  // Picks and immediately completes with `outcome` (the in-flight slot is released).
  std::optional<std::uint32_t> run(Outcome outcome = Outcome::kSuccess) {
    auto l = pick();
    if (!l) return std::nullopt;
    states[l->backend].release();
    states[l->backend].record(outcome, l->trial, now, policy);
    return l->backend;
  }
};

TEST(Balancer, FirstTierWhileItHasAnAvailableBackend) {
  Fixture f({{{0, 1}}, {{1, 1}}}, 2);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(f.run(), 0u);
  f.states[0].throttle(f.now + 1500);
  auto l = f.pick();
  ASSERT_TRUE(l);
  EXPECT_EQ(l->backend, 1u);
  EXPECT_EQ(l->tier, 1u);
  f.states[1].release();
  f.now += 1500;  // the cooldown is over: back to tier 1
  EXPECT_EQ(f.run(), 0u);
}

TEST(Balancer, WeightedSplitFollowsTheWeights) {
  Fixture f({{{0, 3}, {1, 1}}}, 2);
  std::array<int, 2> count{};
  for (int i = 0; i < 20'000; ++i) ++count[*f.run()];
  EXPECT_NEAR(count[0] / 20'000.0, 0.75, 0.015);
}

// A closed loop: `concurrency` requests in flight; each step one of them completes (backend 0's
// requests `slowdown` times less often than backend 1's) and a new one is picked. Returns
// backend 0's share of the picks.
double closed_loop_share(std::uint32_t w0, std::uint32_t w1, std::size_t concurrency, int slowdown) {
  Fixture f({{{0, w0}, {1, w1}}}, 2);
  std::vector<std::uint32_t> held;
  int first = 0;
  Rng done(9);
  constexpr int kPicks = 40'000;
  for (int i = 0; i < kPicks; ++i) {
    if (held.size() == concurrency) {
      std::uint64_t total = 0;
      for (auto b : held) total += b == 0 ? 1 : static_cast<std::uint64_t>(slowdown);
      auto x = done.below(total);
      std::size_t k = 0;
      for (; k + 1 < held.size(); ++k) {
        auto w = held[k] == 0 ? 1u : static_cast<std::uint64_t>(slowdown);
        if (x < w) break;
        x -= w;
      }
      f.states[held[k]].release();
      held.erase(held.begin() + static_cast<std::ptrdiff_t>(k));
    }
    auto l = f.pick();
    if (!l) return -1;
    first += l->backend == 0 ? 1 : 0;
    held.push_back(l->backend);
  }
  return first / static_cast<double>(kPicks);
}

TEST(Balancer, WeightsHoldAtEveryConcurrencyWhenBackendsAreEquallyFast) {
  for (std::size_t concurrency : {1u, 2u, 4u, 8u, 16u, 64u}) {
    EXPECT_NEAR(closed_loop_share(3, 1, concurrency, 1), 0.75, 0.035) << "3:1 at " << concurrency;
    EXPECT_NEAR(closed_loop_share(9, 1, concurrency, 1), 0.90, 0.025) << "9:1 at " << concurrency;
    EXPECT_NEAR(closed_loop_share(1, 1, concurrency, 1), 0.50, 0.02) << "1:1 at " << concurrency;
  }
}

TEST(Balancer, ASlowBackendGetsLessThanItsWeight) {
  // Backend 0 answers four times slower: its requests pile up and the two choices steer away.
  EXPECT_LT(closed_loop_share(1, 1, 16, 4), 0.35);
  EXPECT_LT(closed_loop_share(1, 1, 64, 4), 0.30);
  EXPECT_LT(closed_loop_share(3, 1, 64, 4), 0.55);
}

TEST(Balancer, TwoChoicesPreferTheLessLoaded) {
  Fixture f({{{0, 1}, {1, 1}}}, 2);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(f.states[0].try_acquire(0));  // 4 in flight on 0
  for (int i = 0; i < 50; ++i) {
    auto l = f.pick();
    ASSERT_TRUE(l);
    EXPECT_EQ(l->backend, 1u);
    f.states[1].release();
  }
}

TEST(Balancer, ConcurrencyCapSpillsThenReportsWhenCapacityReturns) {
  Fixture f({{{0, 1}}, {{1, 1}}}, 2, /*cap=*/1);
  auto a = f.pick();
  ASSERT_TRUE(a);
  EXPECT_EQ(a->backend, 0u);
  auto b = f.pick();
  ASSERT_TRUE(b);
  EXPECT_EQ(b->backend, 1u);
  EXPECT_FALSE(f.pick());
  EXPECT_EQ(f.states[0].condition(f.now, 1), Condition::kSaturated);
  EXPECT_EQ(earliest_recovery(f.route, f.slots, f.now), f.now + 1'000);
  f.states[0].release();
  EXPECT_EQ(f.pick()->backend, 0u);
}

TEST(Balancer, RemainingTokensBelowTheNeedSteerToTheSibling) {
  Fixture f({{{0, 1}, {1, 1}}}, 2);
  Signals low;
  low.remaining_tokens = 50;
  f.states[0].observe(low, f.now);
  for (int i = 0; i < 50; ++i) {
    auto l = f.pick(/*need=*/100);
    ASSERT_TRUE(l);
    EXPECT_EQ(l->backend, 1u);
    f.states[1].release();
  }
  // A need the report covers, or a stale report, does not steer.
  std::array<int, 2> seen{};
  for (int i = 0; i < 200; ++i) {
    auto l = f.pick(/*need=*/10);
    ++seen[l->backend];
    f.states[l->backend].release();
  }
  EXPECT_GT(seen[0], 50);
  f.now += 10'001;
  EXPECT_FALSE(f.states[0].remaining_tokens(f.now));
  // Both low: still served (preference, not exclusion).
  f.states[0].observe(low, f.now);
  f.states[1].observe(low, f.now);
  EXPECT_TRUE(f.pick(100));
}

TEST(Balancer, NoRemainingRequestsIsAvoided) {
  Fixture f({{{0, 1}, {1, 1}}}, 2);
  Signals s;
  s.remaining_requests = 0;
  f.states[1].observe(s, f.now);
  for (int i = 0; i < 30; ++i) EXPECT_EQ(f.run(), 0u);
}

TEST(Breaker, OpensAfterConsecutiveFailuresThenOneTrialClosesIt) {
  Fixture f({{{0, 1}}, {{1, 1}}}, 2);
  auto& s = f.states[0];
  EXPECT_EQ(f.run(Outcome::kFailure), 0u);
  EXPECT_EQ(f.run(Outcome::kSuccess), 0u);  // a success resets the count
  for (int i = 0; i < 3; ++i) EXPECT_EQ(f.run(Outcome::kFailure), 0u);
  EXPECT_EQ(s.breaker(), Breaker::kOpen);
  EXPECT_EQ(s.breaker_opens(), 1u);
  EXPECT_EQ(s.condition(f.now, 0), Condition::kBreakerOpen);
  EXPECT_EQ(f.run(), 1u);  // open: tier 2 serves
  f.now += 1'000;          // the open period is over: exactly one trial goes through
  auto trial = f.pick();
  ASSERT_TRUE(trial);
  EXPECT_EQ(trial->backend, 0u);
  EXPECT_TRUE(trial->trial);
  EXPECT_EQ(s.condition(f.now, 0), Condition::kBreakerHalfOpen);
  auto other = f.pick();
  ASSERT_TRUE(other);
  EXPECT_EQ(other->backend, 1u);  // the trial is in flight: nobody else gets backend 0
  f.states[1].release();
  s.release();
  s.record(Outcome::kSuccess, true, f.now, f.policy);
  EXPECT_EQ(s.breaker(), Breaker::kClosed);
  EXPECT_EQ(f.run(), 0u);
}

TEST(Breaker, AFailedTrialReopensForTwiceAsLongUpToTheCap) {
  Fixture f({{{0, 1}}}, 1);
  auto& s = f.states[0];
  for (int i = 0; i < 3; ++i) f.run(Outcome::kFailure);
  EXPECT_EQ(s.breaker_until(), f.now + 1'000);
  TimeMs expected[] = {2'000, 4'000, 8'000, 8'000};
  for (auto period : expected) {
    f.now = s.breaker_until();
    EXPECT_EQ(f.run(Outcome::kFailure), 0u);  // the trial fails
    EXPECT_EQ(s.breaker(), Breaker::kOpen);
    EXPECT_EQ(s.breaker_until(), f.now + period);
    EXPECT_FALSE(f.pick());
    EXPECT_EQ(earliest_recovery(f.route, f.slots, f.now), f.now + period);
  }
  f.now = s.breaker_until();
  EXPECT_EQ(f.run(Outcome::kSuccess), 0u);
  for (int i = 0; i < 3; ++i) f.run(Outcome::kFailure);
  EXPECT_EQ(s.breaker_until(), f.now + 1'000);  // a success reset the growth
}

TEST(Breaker, ATrialThatLearnsNothingLetsTheNextRequestTry) {
  Fixture f({{{0, 1}}}, 1);
  for (int i = 0; i < 3; ++i) f.run(Outcome::kFailure);
  f.now += 1'000;
  auto trial = f.pick();
  ASSERT_TRUE(trial && trial->trial);
  EXPECT_FALSE(f.pick());
  f.states[0].release();
  f.states[0].record(Outcome::kNeutral, true, f.now, f.policy);  // e.g. the client left
  auto next = f.pick();
  ASSERT_TRUE(next);
  EXPECT_TRUE(next->trial);
}

TEST(Balancer, ProbeFailuresExcludeAndHaveNoRecoveryTime) {
  Fixture f({{{0, 1}, {1, 1}}}, 2);
  f.states[0].set_probe_healthy(false);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(f.run(), 1u);
  f.states[1].set_probe_healthy(false);
  EXPECT_FALSE(f.pick());
  EXPECT_FALSE(earliest_recovery(f.route, f.slots, f.now));
  EXPECT_EQ(f.states[0].condition(f.now, 0), Condition::kProbeFailed);
}

TEST(Balancer, TriedAndPinnedBackends) {
  Fixture f({{{0, 1}, {1, 1}}, {{2, 1}}}, 3);
  for (int i = 0; i < 20; ++i) {
    auto l = f.pick(0, {1, 0, 0});
    EXPECT_EQ(l->backend, 1u);
    f.states[1].release();
  }
  auto l = f.pick(0, {1, 1, 0});
  EXPECT_EQ(l->backend, 2u);
  EXPECT_EQ(l->tier, 1u);
  f.states[2].release();
  EXPECT_FALSE(f.pick(0, {1, 1, 1}));
  for (int i = 0; i < 10; ++i) {
    auto p = f.pick(0, {}, 2);
    EXPECT_EQ(p->backend, 2u);
    f.states[2].release();
  }
  f.states[2].throttle(f.now + 700);
  EXPECT_FALSE(f.pick(0, {}, 2));
  EXPECT_EQ(earliest_recovery(f.route, f.slots, f.now, 2), f.now + 700);
}

TEST(Balancer, EarliestRecoveryIsTheSoonestThrottle) {
  Fixture f({{{0, 1}}, {{1, 1}}}, 2);
  f.states[0].throttle(f.now + 3'000);
  f.states[1].throttle(f.now + 1'000);
  f.states[1].throttle(f.now + 500);  // an earlier throttle never shortens a later one
  EXPECT_FALSE(f.pick());
  EXPECT_EQ(earliest_recovery(f.route, f.slots, f.now), f.now + 1'000);
  EXPECT_EQ(f.states[1].condition(f.now, 0), Condition::kThrottled);
}

TEST(RetryBudget, MinimumThenFractionOfActiveRequests) {
  RetryBudget b;
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(b.try_begin_retry(0.2, 3));
  EXPECT_FALSE(b.try_begin_retry(0.2, 3));
  for (int i = 0; i < 100; ++i) b.begin_request();
  int granted = 0;
  while (b.try_begin_retry(0.2, 3) && granted < 1000) ++granted;
  EXPECT_EQ(b.retries(), 20);
  b.end_retry();
  EXPECT_TRUE(b.try_begin_retry(0.2, 3));
}

TEST(ExpectedTokens, PromptBytesAndOutputAllowance) {
  EXPECT_EQ(expected_tokens(400, 100, 1), 200);
  EXPECT_EQ(expected_tokens(400, 100, 3), 400);
  EXPECT_EQ(expected_tokens(4, 0, 0), 17);
}

}  // namespace
}  // namespace tollgate::routing

// Calendar budgets with a fake wall clock: UTC day and month boundaries (leap years included),
// reservations that are refused as exhausted or busy, settlement across a period change, the
// warning level, replay seeding, all-or-nothing holds over several budgets, and prices.
#include "tollgate/ratelimit/budget.hpp"

#include <gtest/gtest.h>

#include <limits>
#include <thread>
#include <vector>

namespace tollgate::ratelimit {
namespace {

constexpr UnixMs kDay = 86'400'000;
// 2028-02-28T23:59:59Z: a leap year's February.
constexpr UnixMs kFeb28 = 1835395199000;

TEST(Period, DayAndMonthBoundariesInUtc) {
  EXPECT_EQ(period_start(Period::kDay, kFeb28), kFeb28 - 86'399'000);
  EXPECT_EQ(period_end(Period::kDay, kFeb28), kFeb28 + 1000);
  // The next day is Feb 29 (leap year): still February.
  EXPECT_EQ(period_index(Period::kMonth, kFeb28 + 1000), period_index(Period::kMonth, kFeb28));
  // March starts a day later.
  EXPECT_EQ(period_end(Period::kMonth, kFeb28), kFeb28 + 1000 + kDay);
  EXPECT_EQ(period_index(Period::kMonth, kFeb28 + 1000 + kDay), period_index(Period::kMonth, kFeb28) + 1);
  EXPECT_EQ(period_index(Period::kMonth, 0), 0);  // January 1970
  EXPECT_EQ(period_index(Period::kDay, kDay - 1), 0);
  EXPECT_EQ(period_index(Period::kDay, kDay), 1);
  // December rolls over into the next year.
  constexpr UnixMs kDec31 = 1798761599000;  // 2026-12-31T23:59:59Z
  EXPECT_EQ(period_end(Period::kMonth, kDec31), kDec31 + 1000);
  EXPECT_EQ(period_index(Period::kMonth, kDec31 + 1000), (2027 - 1970) * 12);
}

TEST(Budget, ReservesUntilTheLimitThenExhaustedOrBusy) {
  Budget b;
  std::int64_t period = 0;
  EXPECT_EQ(b.reserve(60, 100, Period::kDay, kFeb28, period), Budget::Verdict::kOk);
  // 60 held by a request in flight: 50 more do not fit now, but might after it settles.
  EXPECT_EQ(b.reserve(50, 100, Period::kDay, kFeb28, period), Budget::Verdict::kBusy);
  b.settle(60, period, 30, 0, Period::kDay, kFeb28);  // it used 30
  EXPECT_EQ(b.used(Period::kDay, kFeb28), 30);
  EXPECT_EQ(b.reserve(50, 100, Period::kDay, kFeb28, period), Budget::Verdict::kOk);
  b.settle(50, period, 75, 0, Period::kDay, kFeb28);  // used more than reserved: debt
  EXPECT_EQ(b.used(Period::kDay, kFeb28), 105);
  // Use alone is past the limit: exhausted until the period ends.
  EXPECT_EQ(b.reserve(1, 100, Period::kDay, kFeb28, period), Budget::Verdict::kExhausted);
  EXPECT_EQ(b.reserve(1, 100, Period::kDay, kFeb28 + 1000, period), Budget::Verdict::kOk);
  EXPECT_EQ(b.used(Period::kDay, kFeb28 + 1000), 0);
  EXPECT_EQ(b.used(Period::kDay, kFeb28), 0);  // a clock stepping back keeps the later period
}

TEST(Budget, SettlingAcrossThePeriodChangeBillsTheNewPeriod) {
  Budget b;
  std::int64_t period = 0;
  ASSERT_EQ(b.reserve(80, 100, Period::kDay, kFeb28, period), Budget::Verdict::kOk);
  // The request ends after midnight: its use counts where it ended (as the ledger replays it),
  // and the old period's reservation is gone with the old period.
  b.settle(80, period, 40, 0, Period::kDay, kFeb28 + 2000);
  EXPECT_EQ(b.used(Period::kDay, kFeb28 + 2000), 40);
  EXPECT_EQ(b.reserve(60, 100, Period::kDay, kFeb28 + 2000, period), Budget::Verdict::kOk);
}

TEST(Budget, AbsurdAmountsAreRefusedNotOverflowed) {
  Budget b;
  std::int64_t period = 0;
  constexpr auto kMax = std::numeric_limits<std::int64_t>::max();
  EXPECT_EQ(b.reserve(kMax, 1'000'000, Period::kDay, kFeb28, period), Budget::Verdict::kExhausted);
  ASSERT_EQ(b.reserve(999'999, 1'000'000, Period::kDay, kFeb28, period), Budget::Verdict::kOk);
  EXPECT_EQ(b.reserve(kMax - 10, 1'000'000, Period::kDay, kFeb28, period), Budget::Verdict::kExhausted);
  EXPECT_EQ(b.reserve(2, 1'000'000, Period::kDay, kFeb28, period), Budget::Verdict::kBusy);
  config::PriceConfig p;
  p.completion_per_1k = 0.06;
  // max_tokens of 10^15 at $0.06/1k is 6e19 nano-USD: saturated, so every budget refuses it.
  EXPECT_GE(Price(p).ceiling(10, 1'000'000'000'000'000), 4'000'000'000'000'000'000);
}

TEST(Budget, WarningOncePerPeriod) {
  Budget b;
  std::int64_t period = 0;
  ASSERT_EQ(b.reserve(10, 100, Period::kDay, kFeb28, period), Budget::Verdict::kOk);
  EXPECT_FALSE(b.settle(10, period, 70, 80, Period::kDay, kFeb28));
  ASSERT_EQ(b.reserve(10, 100, Period::kDay, kFeb28, period), Budget::Verdict::kOk);
  EXPECT_TRUE(b.settle(10, period, 10, 80, Period::kDay, kFeb28));  // 80 reached
  ASSERT_EQ(b.reserve(10, 100, Period::kDay, kFeb28, period), Budget::Verdict::kOk);
  EXPECT_FALSE(b.settle(10, period, 10, 80, Period::kDay, kFeb28));  // already warned
  ASSERT_EQ(b.reserve(10, 100, Period::kDay, kFeb28 + 1000, period), Budget::Verdict::kOk);
  EXPECT_TRUE(b.settle(10, period, 90, 80, Period::kDay, kFeb28 + 1000));  // a new day warns again
}

TEST(Budget, SeedFromTheLedger) {
  Budget b;
  auto today = period_index(Period::kDay, kFeb28);
  b.seed(70, today);
  b.seed(5, today - 1);  // an older period is ignored
  EXPECT_EQ(b.used(Period::kDay, kFeb28), 70);
  std::int64_t period = 0;
  EXPECT_EQ(b.reserve(31, 100, Period::kDay, kFeb28, period), Budget::Verdict::kExhausted);
  EXPECT_EQ(b.reserve(30, 100, Period::kDay, kFeb28, period), Budget::Verdict::kOk);
}

TEST(Budget, ConcurrentReservationsNeverPassTheLimit) {
  Budget b;
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        std::int64_t period = 0;
        if (b.reserve(7, 7000, Period::kMonth, kFeb28, period) == Budget::Verdict::kOk) ++admitted;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(admitted.load(), 1000);  // exactly 7000 / 7
}

TEST(BudgetHold, AllOrNothingAcrossBudgets) {
  BudgetRegistry reg;
  config::BudgetConfig client;
  client.tokens_per_day = 1000;
  client.usd_per_month = 1.0;  // 1e9 nano-USD
  config::BudgetConfig tenant;
  tenant.tokens_per_day = 150;
  std::vector<BudgetLimit> limits;
  std::vector<std::shared_ptr<Budget>> keep;
  add_budgets(reg, Scope::kClient, "bot", client, limits, keep);
  add_budgets(reg, Scope::kTenant, "mkt", tenant, limits, keep);
  ASSERT_EQ(limits.size(), 3u);
  EXPECT_EQ(limits[1].limit, 1'000'000'000);
  EXPECT_EQ(limits[0].warn_level, 800);

  BudgetHold first;
  EXPECT_FALSE(first.reserve(limits, 100, 1000, kFeb28));
  BudgetHold second;
  auto refusal = second.reserve(limits, 100, 1000, kFeb28);  // the tenant's 150 is held by `first`
  ASSERT_TRUE(refusal);
  EXPECT_EQ(refusal->limit->scope, Scope::kTenant);
  EXPECT_FALSE(refusal->exhausted);
  EXPECT_FALSE(second.held());
  // Nothing of `second` stayed on the client's budgets.
  first.settle(20, 500, kFeb28, nullptr);
  EXPECT_EQ(limits[0].budget->used(Period::kDay, kFeb28), 20);
  BudgetHold third;
  EXPECT_FALSE(third.reserve(limits, 130, 1000, kFeb28));  // 20 used + 130 = 150
  third.settle(130, 0, kFeb28, nullptr);
  first.settle(999, 999, kFeb28, nullptr);  // settles once only
  EXPECT_EQ(limits[2].budget->used(Period::kDay, kFeb28), 150);
  BudgetHold fourth;
  refusal = fourth.reserve(limits, 1, 1, kFeb28);
  ASSERT_TRUE(refusal);
  EXPECT_TRUE(refusal->exhausted);
  EXPECT_EQ(refusal->used, 150);
  // The registry hands out the same counters again (a reload keeps the use).
  EXPECT_EQ(reg.get(BudgetRegistry::key(Scope::kTenant, "mkt", Period::kDay, Measure::kTokens)).get(),
            limits[2].budget);
}

TEST(Price, CostOfEachTokenKind) {
  config::PriceConfig p;
  p.prompt_per_1k = 0.0025;
  p.completion_per_1k = 0.01;
  p.cached_prompt_per_1k = 0.00125;
  p.reasoning_per_1k = 0.02;
  Price price(p);
  core::Usage u;
  u.prompt = 1000;
  u.cached = 400;
  u.completion = 500;
  u.reasoning = 100;
  // 600 * 2500 + 400 * 1250 + 400 * 10000 + 100 * 20000 nano-USD
  EXPECT_EQ(price.cost(u), 1'500'000 + 500'000 + 4'000'000 + 2'000'000);
  u.cached = 5000;  // nonsense from a backend: capped at the prompt
  u.reasoning = 0;
  EXPECT_EQ(price.cost(u), 1000 * 1250 + 500 * 10000);
  EXPECT_EQ(price.ceiling(100, 50), 100 * 2500 + 50 * 20000);  // the dearer output rate
}

}  // namespace
}  // namespace tollgate::ratelimit

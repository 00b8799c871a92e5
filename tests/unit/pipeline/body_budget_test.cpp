// server/body_budget.hpp: the gateway-wide bound on request bodies held in memory.

#include "server/body_budget.hpp"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace tollgate::server {
namespace {

TEST(BodyBudgetTest, TakesWhatFitsAndGivesItBackWhenTheHoldEnds) {
  BodyBudget budget(1000);
  {
    BodyBudget::Hold a;
    ASSERT_TRUE(budget.take(600, a));
    EXPECT_EQ(a.bytes(), 600u);
    EXPECT_EQ(budget.held(), 600u);
    BodyBudget::Hold b;
    EXPECT_FALSE(budget.take(401, b)) << "600 + 401 > 1000";
    EXPECT_EQ(b.bytes(), 0u);
    EXPECT_EQ(budget.refused(), 1u);
    EXPECT_TRUE(budget.take(400, b));
    EXPECT_EQ(budget.held(), 1000u);
  }
  EXPECT_EQ(budget.held(), 0u);
}

TEST(BodyBudgetTest, AHoldGrowsInStepsAndMovesWithItsBytes) {
  BodyBudget budget(1000);
  BodyBudget::Hold hold;
  ASSERT_TRUE(budget.take(300, hold));
  ASSERT_TRUE(budget.take(300, hold));
  EXPECT_EQ(hold.bytes(), 600u);
  BodyBudget::Hold moved = std::move(hold);
  EXPECT_EQ(moved.bytes(), 600u);
  EXPECT_EQ(budget.held(), 600u);
  moved = BodyBudget::Hold();
  EXPECT_EQ(budget.held(), 0u);
}

TEST(BodyBudgetTest, ZeroBytesAlwaysFitAndAHugeRequestNeverWraps) {
  BodyBudget budget(100);
  BodyBudget::Hold hold;
  EXPECT_TRUE(budget.take(0, hold));
  EXPECT_FALSE(budget.take(static_cast<std::size_t>(-1), hold));
  EXPECT_EQ(budget.held(), 0u);
}

TEST(BodyBudgetTest, ALowerLimitRefusesNewBodiesAndKeepsTheHeldOnes) {
  BodyBudget budget(1000);
  BodyBudget::Hold hold;
  ASSERT_TRUE(budget.take(800, hold));
  budget.set_limit(500);
  BodyBudget::Hold next;
  EXPECT_FALSE(budget.take(1, next));
  EXPECT_EQ(budget.held(), 800u);
}

TEST(BodyBudgetTest, ConcurrentTakesNeverExceedTheLimit) {
  constexpr std::size_t kLimit = 10'000;
  BodyBudget budget(kLimit);
  std::vector<std::thread> threads;
  std::atomic<std::size_t> peak{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20'000; ++i) {
        BodyBudget::Hold h;
        if (budget.take(700, h)) {
          auto held = budget.held();
          auto p = peak.load();
          while (held > p && !peak.compare_exchange_weak(p, held)) {
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_LE(peak.load(), kLimit);
  EXPECT_EQ(budget.held(), 0u);
}

}  // namespace
}  // namespace tollgate::server

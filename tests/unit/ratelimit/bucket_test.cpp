// Admission buckets with a fake clock: refill, burst, debt, requests that never fit, overflow,
// all-or-nothing reservations over several buckets, and settlement.
#include "tollgate/ratelimit/bucket.hpp"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace tollgate::ratelimit {
namespace {

constexpr Nanos kSecond = 1'000'000'000;
constexpr Nanos kT0 = 1'000 * kSecond;

TEST(Bucket, BurstOfOneMinuteThenRefillsAtTheRate) {
  Bucket b;
  std::optional<Nanos> wait;
  EXPECT_EQ(b.available(kT0, 600), 600);
  EXPECT_TRUE(b.try_take(600, kT0, 600, wait));
  EXPECT_EQ(b.available(kT0, 600), 0);
  EXPECT_FALSE(b.try_take(10, kT0, 600, wait));
  ASSERT_TRUE(wait);
  EXPECT_EQ(*wait, kSecond);  // 10 units at 10 per second
  EXPECT_TRUE(b.try_take(10, kT0 + kSecond, 600, wait));
  EXPECT_EQ(b.available(kT0 + kSecond, 600), 0);
  EXPECT_EQ(b.available(kT0 + 61 * kSecond, 600), 600);  // full again, never above
}

TEST(Bucket, RequestsLargerThanTheLimitNeverFit) {
  Bucket b;
  std::optional<Nanos> wait = 5;
  EXPECT_FALSE(b.try_take(601, kT0, 600, wait));
  EXPECT_FALSE(wait);  // no wait would help
  EXPECT_EQ(b.available(kT0, 600), 600);  // and nothing was taken
}

TEST(Bucket, RefundAndDebt) {
  Bucket b;
  std::optional<Nanos> wait;
  ASSERT_TRUE(b.try_take(500, kT0, 600, wait));
  b.put_back(490, 600);  // used 10 of 500
  EXPECT_EQ(b.available(kT0, 600), 590);
  b.charge(200, kT0, 600);  // used 200 more than reserved
  EXPECT_EQ(b.available(kT0, 600), 390);
  b.charge(1000, kT0, 600);  // deep debt: nothing until it is paid off
  EXPECT_EQ(b.available(kT0, 600), 0);
  EXPECT_FALSE(b.try_take(1, kT0 + 10 * kSecond, 600, wait));
  EXPECT_TRUE(b.try_take(1, kT0 + 62 * kSecond, 600, wait));
}

TEST(Bucket, HugeValuesDoNotOverflow) {
  Bucket b;
  std::optional<Nanos> wait;
  EXPECT_TRUE(b.try_take(1'000'000'000'000, kT0, 1'000'000'000'000, wait));
  EXPECT_EQ(b.available(kT0, 1'000'000'000'000), 0);
  b.put_back(1'000'000'000'000, 1'000'000'000'000);
  EXPECT_EQ(b.available(kT0, 1'000'000'000'000), 1'000'000'000'000);
  Bucket c;
  EXPECT_TRUE(c.try_take(1, kT0, 1, wait));  // one per minute
  EXPECT_FALSE(c.try_take(1, kT0, 1, wait));
  EXPECT_EQ(*wait, 60 * kSecond);
}

TEST(Reservation, AllOrNothingAcrossBuckets) {
  Bucket client, tenant, deployment, rpm;
  std::vector<Limit> limits = {{&client, 1000, Scope::kClient, Unit::kTokens, "bot"},
                               {&tenant, 300, Scope::kTenant, Unit::kTokens, "marketing"},
                               {&rpm, 2, Scope::kClient, Unit::kRequests, "bot"},
                               {&deployment, 5000, Scope::kDeployment, Unit::kTokens, "gpt-4o"}};
  Reservation a;
  EXPECT_FALSE(a.reserve(limits, 200, kT0));
  Reservation b;
  auto refused = b.reserve(limits, 200, kT0);  // the tenant has only 100 left
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->limit->scope, Scope::kTenant);
  EXPECT_FALSE(b.held());
  EXPECT_EQ(client.available(kT0, 1000), 800);  // b's client tokens went back
  EXPECT_EQ(rpm.available(kT0, 2), 1);
  a.settle(50, kT0);  // used 50 of 200: 150 back everywhere, the request stays counted
  EXPECT_EQ(client.available(kT0, 1000), 950);
  EXPECT_EQ(tenant.available(kT0, 300), 250);
  EXPECT_EQ(deployment.available(kT0, 5000), 4950);
  EXPECT_EQ(rpm.available(kT0, 2), 1);
  a.settle(10, kT0);  // once only
  EXPECT_EQ(client.available(kT0, 1000), 950);
  Reservation c;
  EXPECT_FALSE(c.reserve(limits, 100, kT0));
  auto third = Reservation().reserve(limits, 1, kT0);  // 2 requests per minute used up
  ASSERT_TRUE(third);
  EXPECT_EQ(third->limit->unit, Unit::kRequests);
}

TEST(Reservation, ConcurrentReservationsNeverOvershoot) {
  Bucket b;
  std::vector<Limit> limits = {{&b, 10'000, Scope::kClient, Unit::kTokens, "bot"}};
  std::atomic<std::int64_t> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        Reservation r;
        if (!r.reserve(limits, 7, kT0)) admitted += 7;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_LE(admitted.load(), 10'000);
  EXPECT_GE(admitted.load(), 10'000 - 7);
}

}  // namespace
}  // namespace tollgate::ratelimit

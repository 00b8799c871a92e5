// A worker's leases without a store: what a request may take from them, what goes back into
// them, what each flush sends (give-backs, debts, budget use, forgotten grant holds), and when
// a lease ends.
#include "cluster/lease_book.hpp"

#include <gtest/gtest.h>

namespace tollgate::cluster {
namespace {

using ratelimit::BudgetLimit;
using ratelimit::Limit;
using ratelimit::Measure;
using ratelimit::Period;
using ratelimit::Scope;
using ratelimit::Unit;
using Kind = ReserveOutcome::Kind;
using std::chrono::milliseconds;

constexpr ratelimit::UnixMs kNow = 1'796'300'000'000;  // 2026-12-03, 10:13 UTC
const LimitKeys kKeys("p:");

Limit tokens(std::int64_t per_minute) { return Limit{nullptr, per_minute, Scope::kClient, Unit::kTokens, "bot"}; }
Limit requests(std::int64_t per_minute) { return Limit{nullptr, per_minute, Scope::kClient, Unit::kRequests, "bot"}; }

struct Fixture {
  std::vector<BudgetLimit> budgets{BudgetLimit{nullptr, 100'000, 0, Period::kDay, Measure::kTokens, Scope::kTenant, "team"}};
  LeaseBook book{kKeys, LeaseTerms{0.01, milliseconds(1000)}};
  int ids = 0;

  Demand demand(std::int64_t n, bool with_budget = true) {
    return Demand{{tokens(60'000), requests(6'000)}, with_budget ? &budgets : nullptr, n, 0, "d" + std::to_string(++ids)};
  }
  // The store held `d` and granted what the book asked for.
  SharedHold grant(const Demand& d, ratelimit::UnixMs now = kNow) {
    ReserveOutcome held;
    held.kind = Kind::kHeld;
    held.granted = book.topups(d, now);
    held.remaining.assign(d.limits.size(), 10'000);
    held.hold = hold_for(kKeys, d, now);
    book.granted(d, held, now);
    return held.hold;
  }
};

const Flush::Bucket* bucket(const Flush& f, std::string_view suffix) {
  for (const auto& b : f.buckets) {
    if (b.key.ends_with(suffix)) return &b;
  }
  return nullptr;
}

TEST(LeaseBookTest, ARequestTakesFromLiveLeasesOnlyWhenEveryOneHasRoom) {
  Fixture fx;
  auto first = fx.demand(100);
  EXPECT_FALSE(fx.book.take(first, kNow)) << "no lease yet: the store decides";
  auto t = fx.book.topups(first, kNow);
  EXPECT_EQ(t.buckets, (std::vector<std::int64_t>{600, 60}));  // 1 % of 60,000 tokens and 6,000 requests
  EXPECT_EQ(t.budgets, (std::vector<std::int64_t>{1'000}));
  fx.grant(first);
  // 600 tokens, 60 requests and 1,000 budget units leased: six requests of 100 fit, the seventh not.
  for (int i = 0; i < 6; ++i) {
    auto taken = fx.book.take(fx.demand(100), kNow + 10);
    EXPECT_TRUE(taken) << i;
    if (taken) {
      EXPECT_EQ(taken->remaining[0], 10'000 + 600 - 100 * (i + 1));
    }
  }
  EXPECT_FALSE(fx.book.take(fx.demand(100), kNow + 10));
  // A bigger request than the lease holds goes to the store, which tops up only the short lease.
  auto big = fx.demand(200, false);
  EXPECT_FALSE(fx.book.take(big, kNow + 10));
  EXPECT_EQ(fx.book.topups(big, kNow + 10).buckets, (std::vector<std::int64_t>{600, 0}));
  // Past the ttl a lease is not used.
  fx.grant(fx.demand(100));
  EXPECT_TRUE(fx.book.take(fx.demand(100), kNow + 999));
  EXPECT_FALSE(fx.book.take(fx.demand(100), kNow + 1000));
}

TEST(LeaseBookTest, NoTopUpSmallerThanTheRequestNorWithoutAShare) {
  Fixture fx;
  auto huge = fx.demand(700);  // more than 1 % of 60,000: a lease of 600 could not hold it
  EXPECT_EQ(fx.book.topups(huge, kNow).buckets, (std::vector<std::int64_t>{0, 60}));
  LeaseBook off(kKeys, LeaseTerms{0, milliseconds(1000)});
  auto d = fx.demand(10);
  EXPECT_EQ(off.topups(d, kNow).buckets, (std::vector<std::int64_t>{0, 0}));
  EXPECT_FALSE(off.take(d, kNow));
}

TEST(LeaseBookTest, UnusedUnitsGoBackIntoTheLeaseUpToItsCapTheRestWithTheFlush) {
  Fixture fx;
  auto hold = fx.grant(fx.demand(500, false));  // the request's 500 plus a top-up of 600
  auto f = fx.book.flush(kNow + 1, false);
  EXPECT_TRUE(f.buckets.empty()) << "a live lease keeps its units";
  ASSERT_EQ(f.forget.size(), 1u) << "the grant's hold is forgotten";
  EXPECT_EQ(f.seq, 1);
  // 200 used of 500: 300 back, but the lease holds at most 600 and has 600.
  fx.book.settle(hold, 200, 0, kNow + 2);
  f = fx.book.flush(kNow + 3, false);
  ASSERT_TRUE(bucket(f, ":tokens"));
  EXPECT_EQ(bucket(f, ":tokens")->delta_us, -cost_us(300, 60'000));
  EXPECT_EQ(f.seq, 2);
  // A request taken from the lease gives its unused units back into it.
  auto taken = fx.book.take(fx.demand(400, false), kNow + 4);
  ASSERT_TRUE(taken);
  fx.book.settle(taken->hold, 100, 0, kNow + 5);
  EXPECT_TRUE(fx.book.take(fx.demand(500, false), kNow + 6)) << "200 left + 300 back";
  EXPECT_TRUE(fx.book.flush(kNow + 7, false).empty());
  EXPECT_EQ(fx.book.flush(kNow + 8, false).seq, 0) << "nothing to send: no sequence number used";
}

TEST(LeaseBookTest, ALeaseEndsAfterItsTtlAndALateSettleGoesStraightBack) {
  Fixture fx;
  fx.grant(fx.demand(100, false));
  auto taken = fx.book.take(fx.demand(300, false), kNow + 10);
  ASSERT_TRUE(taken);
  EXPECT_EQ(fx.book.pending(), 3u);  // two leases with units, one hold to forget
  auto f = fx.book.flush(kNow + 1000, false);
  ASSERT_TRUE(bucket(f, ":tokens"));
  EXPECT_EQ(bucket(f, ":tokens")->delta_us, -cost_us(300, 60'000)) << "600 leased, 300 taken";
  ASSERT_TRUE(bucket(f, ":requests"));
  EXPECT_EQ(bucket(f, ":requests")->delta_us, -cost_us(59, 6'000)) << "60 leased, one taken";
  EXPECT_EQ(fx.book.pending(), 0u);
  // The request in flight ends later: its unused units go back with the next flush.
  fx.book.settle(taken->hold, 100, 0, kNow + 1500);
  f = fx.book.flush(kNow + 1600, false);
  ASSERT_TRUE(bucket(f, ":tokens"));
  EXPECT_EQ(bucket(f, ":tokens")->delta_us, -cost_us(200, 60'000));
}

TEST(LeaseBookTest, UseBeyondTheReservationIsOwed) {
  Fixture fx;
  auto hold = fx.grant(fx.demand(100, false));
  fx.book.settle(hold, 250, 0, kNow + 1);
  auto f = fx.book.flush(kNow + 2, false);
  ASSERT_TRUE(bucket(f, ":tokens"));
  EXPECT_EQ(bucket(f, ":tokens")->delta_us, cost_us(150, 60'000));
}

TEST(LeaseBookTest, BudgetsSendTheirUseAndReleaseWhatItTook) {
  Fixture fx;
  auto hold = fx.grant(fx.demand(300));  // 300 reserved and a lease of 1,000
  fx.book.settle(hold, 120, 0, kNow + 1);  // 120 used; the unused 180 go to the store (the lease is full)
  auto f = fx.book.flush(kNow + 2, false);
  ASSERT_EQ(f.budgets.size(), 1u);
  EXPECT_EQ(f.budgets[0].use, 120);
  EXPECT_EQ(f.budgets[0].release, 120 + 180) << "the used part leaves reserved, and the lease is full";
  EXPECT_EQ(f.budgets[0].name.name, "team");
  EXPECT_EQ(f.budgets[0].expiry, ratelimit::period_end(Period::kDay, kNow) + 86'400'000);
  // Drained: the lease's 1,000 go back, and nothing more is leased.
  fx.book.drain();
  EXPECT_FALSE(fx.book.take(fx.demand(1), kNow + 3));
  EXPECT_EQ(fx.book.topups(fx.demand(1), kNow + 3).budgets, (std::vector<std::int64_t>{0}));
  f = fx.book.flush(kNow + 3, true);
  ASSERT_EQ(f.budgets.size(), 1u);
  EXPECT_EQ(f.budgets[0].release, 1'000);
  EXPECT_EQ(f.budgets[0].use, 0);
  EXPECT_EQ(fx.book.pending(), 0u);
}

TEST(LeaseBookTest, AUseInTheNextPeriodCountsThereAndReleasesAllOfTheEarlierReservation) {
  Fixture fx;
  auto d = fx.demand(300);
  auto hold = hold_for(kKeys, d, kNow);  // reserved without a lease (share 0 at the time)
  auto tomorrow = kNow + 86'400'000;
  fx.book.settle(hold, 100, 0, tomorrow);
  auto f = fx.book.flush(tomorrow, false);
  ASSERT_EQ(f.budgets.size(), 2u);
  auto today_key = kKeys.budget(fx.budgets[0], ratelimit::period_index(Period::kDay, kNow));
  for (const auto& b : f.budgets) {
    if (b.key == today_key) {
      EXPECT_EQ(b.release, 300);
      EXPECT_EQ(b.use, 0);
    } else {
      EXPECT_EQ(b.release, 0);
      EXPECT_EQ(b.use, 100);
    }
  }
}

}  // namespace
}  // namespace tollgate::cluster

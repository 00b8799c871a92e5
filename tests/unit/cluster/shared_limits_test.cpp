// The shared limits' scripts against a real redis-server: reserve all or nothing across buckets
// and budgets, the refusals' kinds and waits, top-ups, flushes (refund, debt, budget use and
// warning) applied once and in order, the release of a lost grant, and the keys' expiry.
#include "cluster/shared_limits.hpp"

#include "cluster/lease_book.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "async_test.hpp"
#include "redis_server.hpp"

namespace tollgate::cluster {
namespace {

using namespace test;
using ratelimit::BudgetLimit;
using ratelimit::Limit;
using ratelimit::Measure;
using ratelimit::Period;
using ratelimit::Scope;
using ratelimit::Unit;
using Kind = ReserveOutcome::Kind;

constexpr ratelimit::UnixMs kNow = 1'796'300'000'000;  // 2026-12-03

Limit tokens(std::string_view name, std::int64_t per_minute, Scope scope = Scope::kClient) {
  return Limit{nullptr, per_minute, scope, Unit::kTokens, name};
}
Limit requests(std::string_view name, std::int64_t per_minute) {
  return Limit{nullptr, per_minute, Scope::kClient, Unit::kRequests, name};
}
BudgetLimit budget(std::string_view name, std::int64_t limit, std::int64_t warn = 0,
                   Measure m = Measure::kTokens) {
  return BudgetLimit{nullptr, limit, warn, Period::kDay, m, Scope::kTenant, name};
}

// (Built outside the coroutines: GCC 12 miscompiles a braced list whose lifetime spans a co_await.)
int next_id = 0;
std::string fresh_id() { return "demand-" + std::to_string(++next_id); }
template <class... L>
Demand demand(std::int64_t tokens, const L&... limits) {
  return Demand{std::vector<Limit>{limits...}, nullptr, tokens, 0, fresh_id()};
}
Demand budget_demand(std::int64_t tokens, const std::vector<BudgetLimit>* budgets) {
  return Demand{{}, budgets, tokens, 0, fresh_id()};
}
std::vector<BudgetLimit> one_budget(std::string_view name, std::int64_t limit, std::int64_t warn) {
  return std::vector<BudgetLimit>(1, budget(name, limit, warn));
}

const Topups kNoTopups{};
Topups topups(std::int64_t bucket, std::int64_t budget) {
  Topups t;
  t.buckets.assign(1, bucket);
  t.budgets.assign(1, budget);
  return t;
}
std::vector<std::int64_t> one(std::int64_t v) { return std::vector<std::int64_t>(1, v); }

// Settles `hold` as a worker would (into a book without leases) and flushes it at once.
Flush settled(const LimitKeys& keys, const SharedHold& hold, std::int64_t tokens, std::int64_t seq,
              ratelimit::UnixMs now = kNow) {
  LeaseBook book(keys, LeaseTerms{0, std::chrono::milliseconds(1000)});
  book.settle(hold, tokens, 0, now);
  auto f = book.flush(now, true);
  f.seq = seq;
  return f;
}

std::int64_t integer(const RedisResult& r) {
  if (r.reply.kind == RedisReply::Kind::kInteger) return r.reply.integer;
  if (r.reply.kind == RedisReply::Kind::kString) return std::stoll(r.reply.text);
  return -1;
}

TEST(SharedLimitsTest, ReservesAllOrNothingAcrossBucketsAndTellsTheWait) {
  RedisServer server;
  run_async([&](net::any_io_executor ex) -> net::awaitable<void> {
    auto c = started(ex, client_options(server));
    EXPECT_TRUE(co_await eventually_answers(*c, Ms(5000)));
    LimitKeys keys("t1:");
    // 600 tokens/min client, 1000 tokens/min deployment, 2 requests/min.
    auto d = demand(400, tokens("bot", 600), tokens("gpt", 1000, Scope::kDeployment), requests("bot", 2));
    auto first = co_await reserve_shared(*c, keys, d, kNoTopups, kNow);
    EXPECT_EQ(first.kind, Kind::kHeld) << first.problem;
    if (!(first.kind == Kind::kHeld)) co_return;
    EXPECT_EQ(first.remaining.size(), 3u);
    if (first.remaining.size() != 3) co_return;
    EXPECT_EQ(first.remaining[0], 200);
    EXPECT_EQ(first.remaining[1], 600);
    EXPECT_EQ(first.remaining[2], 1);
    EXPECT_TRUE(first.hold.taken);
    EXPECT_EQ(first.hold.buckets.size(), 2u);  // the request bucket keeps its request
    // The client bucket lacks 200: refused with a wait of ~20 s, and nothing taken anywhere.
    auto second = co_await reserve_shared(*c, keys, d, kNoTopups, kNow);
    EXPECT_EQ(second.kind, Kind::kLimited);
    if (!(second.kind == Kind::kLimited)) co_return;
    EXPECT_EQ(second.limited->limit, &d.limits[0]);
    EXPECT_TRUE(second.limited->wait.has_value());
    if (!(second.limited->wait.has_value())) co_return;
    EXPECT_NEAR(static_cast<double>(*second.limited->wait) / 1e9, 20.0, 0.5);
    EXPECT_EQ(second.remaining[0], 200);
    auto small = co_await reserve_shared(*c, keys, demand(0, tokens("gpt", 1000, Scope::kDeployment)), kNoTopups, kNow);
    EXPECT_EQ(small.kind, Kind::kHeld);
    if (!(small.kind == Kind::kHeld)) co_return;
    EXPECT_EQ(small.remaining[0], 600) << "the refused reservation took nothing from the deployment";
    // More than a minute's worth never fits: refused without a wait (and without Redis).
    auto huge = co_await reserve_shared(*c, keys, demand(601, tokens("bot", 600)), kNoTopups, kNow);
    EXPECT_EQ(huge.kind, Kind::kLimited);
    if (!(huge.kind == Kind::kLimited)) co_return;
    EXPECT_FALSE(huge.limited->wait.has_value());
    c->close();
  });
}

TEST(SharedLimitsTest, AFlushRefundsTheUnusedAndChargesAnOverrunOnceAndInOrder) {
  RedisServer server;
  run_async([&](net::any_io_executor ex) -> net::awaitable<void> {
    auto c = started(ex, client_options(server));
    EXPECT_TRUE(co_await eventually_answers(*c, Ms(5000)));
    LimitKeys keys("t2:");
    auto seq = keys.flushes("worker-1");
    auto d = demand(300, tokens("bot", 600));
    auto held = co_await reserve_shared(*c, keys, d, kNoTopups, kNow);
    EXPECT_EQ(held.kind, Kind::kHeld);
    if (!(held.kind == Kind::kHeld)) co_return;
    auto refund = settled(keys, held.hold, 100, 1);
    EXPECT_FALSE((co_await flush_shared(*c, seq, refund)).failure);
    // Again (a retry after a lost reply), or an older flush: nothing changes.
    EXPECT_FALSE((co_await flush_shared(*c, seq, refund)).failure);
    auto probe = co_await reserve_shared(*c, keys, demand(0, tokens("bot", 600)), kNoTopups, kNow);
    EXPECT_NEAR(static_cast<double>(probe.remaining[0]), 500, 1) << "300 reserved, 100 used: 200 back, once";
    // An overrun becomes debt.
    auto more = co_await reserve_shared(*c, keys, demand(100, tokens("bot", 600)), kNoTopups, kNow);
    EXPECT_EQ(more.kind, Kind::kHeld);
    if (!(more.kind == Kind::kHeld)) co_return;
    EXPECT_FALSE((co_await flush_shared(*c, seq, settled(keys, more.hold, 450, 2))).failure);
    probe = co_await reserve_shared(*c, keys, demand(0, tokens("bot", 600)), kNoTopups, kNow);
    EXPECT_NEAR(static_cast<double>(probe.remaining[0]), 50, 1);
    EXPECT_FALSE((co_await flush_shared(*c, seq, settled(keys, more.hold, 0, 1))).failure);
    probe = co_await reserve_shared(*c, keys, demand(0, tokens("bot", 600)), kNoTopups, kNow);
    EXPECT_NEAR(static_cast<double>(probe.remaining[0]), 50, 1) << "a flush older than the last applied is ignored";
    c->close();
  });
}

TEST(SharedLimitsTest, TopUpsAreTakenOnlyWhereThreeTimesTheirRoomRemains) {
  RedisServer server;
  run_async([&](net::any_io_executor ex) -> net::awaitable<void> {
    auto c = started(ex, client_options(server));
    EXPECT_TRUE(co_await eventually_answers(*c, Ms(5000)));
    LimitKeys keys("t6:");
    auto budgets = one_budget("team", 1000, 0);
    auto d = budget_demand(100, &budgets);
    d.limits.push_back(tokens("bot", 600));
    auto extra = topups(100, 150);
    auto first = co_await reserve_shared(*c, keys, d, extra, kNow);
    EXPECT_EQ(first.kind, Kind::kHeld) << first.problem;
    if (!(first.kind == Kind::kHeld)) co_return;
    EXPECT_EQ(first.granted.buckets, one(100));
    EXPECT_EQ(first.granted.budgets, one(150));
    EXPECT_NEAR(static_cast<double>(first.remaining[0]), 400, 1) << "the demand and the top-up";
    auto key = keys.budget(budgets[0], ratelimit::period_index(Period::kDay, kNow));
    EXPECT_EQ(integer(co_await cmd(*c, "HGET", key, "reserved")), 250);
    // 400 left in the bucket, 750 in the budget: after 100 more, 300 and 650 remain; a top-up of
    // 100 would leave 200 (< 3 x 100), one of 150 leaves 500 (>= 3 x 150).
    auto d2 = budget_demand(100, &budgets);
    d2.limits.push_back(tokens("bot", 600));
    auto second = co_await reserve_shared(*c, keys, d2, extra, kNow);
    EXPECT_EQ(second.kind, Kind::kHeld);
    EXPECT_EQ(second.granted.buckets, one(0));
    EXPECT_EQ(second.granted.budgets, one(150));
    // The grant's hold says what it took; a flush forgets it.
    EXPECT_EQ(integer(co_await cmd(*c, "HLEN", keys.hold(d2.id))), 2);
    Flush forget;
    forget.seq = 1;
    forget.forget.push_back(keys.hold(d2.id));
    EXPECT_FALSE((co_await flush_shared(*c, keys.flushes("w"), forget)).failure);
    EXPECT_EQ(integer(co_await cmd(*c, "EXISTS", keys.hold(d2.id))), 0);
    c->close();
  });
}

TEST(SharedLimitsTest, BudgetsRefuseUsedUpOrBusyAndWarnOncePerPeriod) {
  RedisServer server;
  run_async([&](net::any_io_executor ex) -> net::awaitable<void> {
    auto c = started(ex, client_options(server));
    EXPECT_TRUE(co_await eventually_answers(*c, Ms(5000)));
    LimitKeys keys("t3:");
    auto seq = keys.flushes("worker-1");
    auto budgets = one_budget("team", 1000, 800);
    auto a = co_await reserve_shared(*c, keys, budget_demand(700, &budgets), kNoTopups, kNow);
    EXPECT_EQ(a.kind, Kind::kHeld) << a.problem;
    if (!(a.kind == Kind::kHeld)) co_return;
    // 700 held by a request in flight: 400 more is busy, not used up.
    auto busy = co_await reserve_shared(*c, keys, budget_demand(400, &budgets), kNoTopups, kNow);
    EXPECT_EQ(busy.kind, Kind::kOverBudget);
    if (!(busy.kind == Kind::kOverBudget)) co_return;
    EXPECT_FALSE(busy.over_budget->exhausted);
    auto s = co_await flush_shared(*c, seq, settled(keys, a.hold, 850, 1));
    EXPECT_FALSE(s.failure);
    EXPECT_EQ(s.crossed.size(), 1u) << "850 crossed the warning level of 800";
    if (!(s.crossed.size() == 1u)) co_return;
    EXPECT_EQ(s.crossed[0].name, "team");
    // Used 850: 200 more can never fit this period.
    auto used_up = co_await reserve_shared(*c, keys, budget_demand(200, &budgets), kNoTopups, kNow);
    EXPECT_EQ(used_up.kind, Kind::kOverBudget);
    if (!(used_up.kind == Kind::kOverBudget)) co_return;
    EXPECT_TRUE(used_up.over_budget->exhausted);
    EXPECT_EQ(used_up.over_budget->used, 850);
    // A use-only settle (admitted locally while Redis was away) adds its use; no second warning.
    auto use = use_only(budget_demand(0, &budgets), kNow);
    auto s2 = co_await flush_shared(*c, seq, settled(keys, use, 100, 2));
    EXPECT_FALSE(s2.failure);
    EXPECT_TRUE(s2.crossed.empty());
    auto key = keys.budget(budgets[0], ratelimit::period_index(Period::kDay, kNow));
    EXPECT_EQ(integer(co_await cmd(*c, "HGET", key, "used")), 950);
    EXPECT_EQ(integer(co_await cmd(*c, "HGET", key, "reserved")), 0);
    // The key lives until a day after its period ends.
    auto expiry = integer(co_await cmd(*c, "PEXPIRETIME", key));
    EXPECT_EQ(expiry, ratelimit::period_end(Period::kDay, kNow) + 86'400'000);
    // The next day starts from zero.
    auto tomorrow = co_await reserve_shared(*c, keys, budget_demand(900, &budgets), kNoTopups, kNow + 86'400'000);
    EXPECT_EQ(tomorrow.kind, Kind::kHeld);
    c->close();
  });
}

TEST(SharedLimitsTest, AReleaseGivesBackAGrantWhoseReplyWasLostOnce) {
  RedisServer server;
  run_async([&](net::any_io_executor ex) -> net::awaitable<void> {
    auto c = started(ex, client_options(server));
    EXPECT_TRUE(co_await eventually_answers(*c, Ms(5000)));
    LimitKeys keys("t5:");
    auto budgets = one_budget("team", 1000, 0);
    auto d = budget_demand(100, &budgets);
    d.limits.push_back(tokens("bot", 600 * 2));
    auto extra = topups(100, 150);
    auto held = co_await reserve_shared(*c, keys, d, extra, kNow);
    EXPECT_EQ(held.kind, Kind::kHeld);
    // Its reply was lost (a timeout): the limiter releases what the script took, top-ups too.
    EXPECT_FALSE(co_await release_shared(*c, keys, d.id));
    auto key = keys.budget(budgets[0], ratelimit::period_index(Period::kDay, kNow));
    EXPECT_EQ(integer(co_await cmd(*c, "HGET", key, "reserved")), 0);
    auto probe = co_await reserve_shared(*c, keys, demand(0, tokens("bot", 600 * 2)), kNoTopups, kNow);
    EXPECT_NEAR(static_cast<double>(probe.remaining[0]), 1200, 1) << "the bucket got its units back";
    // Released twice, or a grant that never ran: nothing more happens.
    EXPECT_FALSE(co_await release_shared(*c, keys, d.id));
    EXPECT_FALSE(co_await release_shared(*c, keys, "never-ran"));
    EXPECT_EQ(integer(co_await cmd(*c, "HGET", key, "reserved")), 0);
    EXPECT_EQ(integer(co_await cmd(*c, "HEXISTS", key, "used")), 0) << "no use was added";
    EXPECT_EQ(integer(co_await cmd(*c, "EXISTS", keys.hold(d.id))), 0);
    c->close();
  });
}

TEST(SharedLimitsTest, AnUnreachableStoreIsUnavailableNotAnError) {
  RedisServer server;
  run_async([&](net::any_io_executor ex) -> net::awaitable<void> {
    auto c = started(ex, client_options(server, Ms(100)));
    EXPECT_TRUE(co_await eventually_answers(*c, Ms(5000)));
    LimitKeys keys("t4:");
    server.pause();
    auto t0 = SteadyClock::now();
    auto r = co_await reserve_shared(*c, keys, demand(10, tokens("bot", 600)), kNoTopups, kNow);
    EXPECT_EQ(r.kind, Kind::kUnavailable);
    EXPECT_EQ(r.problem, "timeout");
    EXPECT_LT(SteadyClock::now() - t0, Ms(1000));
    server.resume();
    c->close();
  });
}

}  // namespace
}  // namespace tollgate::cluster

// The waiting rooms with a fake clock: strict priority between classes, start-time fair queueing
// between clients of a class (virtual time, weights, a newcomer against a backlog), queue
// limits, cancellation, and the scheduler handing leases to waiters as capacity appears
// (releases, cooldown ends) with their deadlines left to the caller.
#include "tollgate/routing/priority.hpp"

#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <vector>

namespace tollgate::routing {
namespace {

QueueEntry entry(std::size_t cls, std::string flow, double weight = 1) {
  QueueEntry e;
  e.cls = cls;
  e.flow = std::move(flow);
  e.weight = weight;
  return e;
}

// Dispatches one entry at a time, recording the order.
std::vector<std::string> drain(PriorityQueues& q, std::size_t n) {
  std::vector<std::string> order;
  for (std::size_t i = 0; i < n; ++i) {
    bool once = false;
    q.dispatch([&](QueueEntry& e) {
      if (once) return false;
      once = true;
      order.push_back(std::to_string(e.cls) + ":" + e.flow);
      return true;
    });
  }
  return order;
}

TEST(PriorityQueues, StrictPriorityBetweenClasses) {
  PriorityQueues q(3);
  std::deque<QueueEntry> es;
  for (auto [cls, flow] : std::vector<std::pair<std::size_t, std::string>>{
           {2, "batch"}, {1, "app"}, {2, "batch"}, {0, "ui"}, {1, "app"}}) {
    es.push_back(entry(cls, flow));
    ASSERT_TRUE(q.push(es.back(), 100));
  }
  EXPECT_EQ(q.waiting_at_or_above(0), 1u);
  EXPECT_EQ(q.waiting_at_or_above(1), 3u);
  EXPECT_EQ(drain(q, 5), (std::vector<std::string>{"0:ui", "1:app", "1:app", "2:batch", "2:batch"}));
  EXPECT_EQ(q.size(), 0u);
}

TEST(PriorityQueues, FairQueueingLetsANewcomerPassABacklog) {
  PriorityQueues q(1);
  std::deque<QueueEntry> es;
  for (int i = 0; i < 10; ++i) {
    es.push_back(entry(0, "flood"));
    ASSERT_TRUE(q.push(es.back(), 100));
  }
  es.push_back(entry(0, "polite"));
  ASSERT_TRUE(q.push(es.back(), 100));
  // The flood's requests are tagged 0, 1, 2, ...; the newcomer starts at the class's virtual
  // time (0): it goes right after the flood's first, not after all ten.
  auto order = drain(q, 3);
  EXPECT_EQ(order[0], "0:flood");
  EXPECT_EQ(order[1], "0:polite");
  EXPECT_EQ(order[2], "0:flood");
}

TEST(PriorityQueues, EqualSharesForBackloggedFlowsWhateverTheirArrivalRates) {
  PriorityQueues q(1);
  std::deque<QueueEntry> es;
  std::map<std::string, int> served;
  // "fast" queues 10 requests per round, "slow" 1; each round capacity for 2 requests frees up.
  for (int round = 0; round < 200; ++round) {
    for (int i = 0; i < 10; ++i) {
      es.push_back(entry(0, "fast"));
      q.push(es.back(), 1'000'000);
    }
    es.push_back(entry(0, "slow"));
    q.push(es.back(), 1'000'000);
    for (const auto& s : drain(q, 2)) ++served[s];
  }
  // slow's requests never wait behind fast's backlog: it is served every round it has one.
  EXPECT_EQ(served["0:slow"], 200);
  EXPECT_EQ(served["0:fast"], 200);
}

TEST(PriorityQueues, WeightsSplitTheClass) {
  PriorityQueues q(1);
  std::deque<QueueEntry> es;
  for (int i = 0; i < 300; ++i) {
    es.push_back(entry(0, "gold", 3));
    q.push(es.back(), 10'000);
    es.push_back(entry(0, "plain", 1));
    q.push(es.back(), 10'000);
  }
  std::map<std::string, int> served;
  for (const auto& s : drain(q, 200)) ++served[s];
  EXPECT_NEAR(served["0:gold"], 150, 2);
  EXPECT_NEAR(served["0:plain"], 50, 2);
}

TEST(PriorityQueues, AnEntryPlacedOutOfOrderDoesNotPushNewcomersBack) {
  PriorityQueues q(1);
  std::deque<QueueEntry> es;
  for (int i = 0; i < 20; ++i) {
    es.push_back(entry(0, "flood"));
    q.push(es.back(), 100);
  }
  // Only the flood's 11th request (tag 10) can be placed now (say, a backend only it may use).
  q.dispatch([](QueueEntry& e) { return e.tag == 10; }, 100);
  es.push_back(entry(0, "polite"));
  q.push(es.back(), 100);
  // The newcomer starts at the head's tag (0), not behind tags 0..9.
  EXPECT_EQ(es.back().tag, 0);
  auto order = drain(q, 2);
  EXPECT_EQ(order[1], "0:polite");
}

TEST(PriorityQueues, LimitsAndCancellation) {
  PriorityQueues q(2);
  auto a = entry(1, "x"), b = entry(1, "y"), c = entry(1, "z"), d = entry(0, "w");
  EXPECT_TRUE(q.push(a, 2));
  EXPECT_TRUE(q.push(b, 2));
  EXPECT_FALSE(q.push(c, 2));  // the class is full
  EXPECT_FALSE(c.queued);
  EXPECT_TRUE(q.push(d, 2));   // another class has its own limit
  q.remove(a);
  EXPECT_FALSE(a.queued);
  q.remove(a);                 // twice is harmless
  EXPECT_EQ(q.depth(1), 1u);
  EXPECT_TRUE(q.push(c, 2));
  EXPECT_EQ(drain(q, 3), (std::vector<std::string>{"0:w", "1:y", "1:z"}));
}

TEST(PriorityQueues, AClassIsGivenUpAfterConsecutiveMisses) {
  PriorityQueues q(2);
  std::deque<QueueEntry> es;
  for (int i = 0; i < 20; ++i) {
    es.push_back(entry(0, "f" + std::to_string(i)));
    q.push(es.back(), 100);
  }
  es.push_back(entry(1, "low"));
  q.push(es.back(), 100);
  int offered = 0;
  auto n = q.dispatch([&](QueueEntry& e) {
    ++offered;
    return e.cls == 1;  // nothing of class 0 fits; class 1 does
  }, 4);
  EXPECT_EQ(n, 1u);
  EXPECT_EQ(offered, 5);  // 4 misses in class 0, then the class-1 entry
}

// Scheduler: backends with an in-flight cap of 1, leases handed to waiters as capacity appears.
struct SchedulerFixture {
  std::deque<BackendState> states;
  std::vector<Slot> slots;
  Route route;
  Rng rng{7};
  Scheduler sched;
  std::vector<std::string> woken;

  explicit SchedulerFixture(std::size_t backends) {
    auto& tier = route.tiers.emplace_back();
    for (std::size_t i = 0; i < backends; ++i) {
      states.emplace_back();
      slots.push_back(Slot{&states.back(), 1});
      tier.push_back(Member{static_cast<std::uint32_t>(i), 1});
    }
  }
  Waiter waiter(std::size_t cls, std::string flow, TimeMs deadline) {
    Waiter w;
    w.cls = cls;
    w.flow = flow;
    w.deployment = "gpt-4o";
    w.route = &route;
    w.slots = slots;
    w.deadline = deadline;
    w.wake = [this, flow] { woken.push_back(flow); };
    return w;
  }
};

TEST(Scheduler, HandsLeasesInPriorityOrderAsCapacityReturns) {
  SchedulerFixture f(1);
  TimeMs now = 1'000;
  auto busy = pick(f.route, f.slots, PickRequest{now, 0, {}, {}, {}}, f.rng);
  ASSERT_TRUE(busy);
  std::deque<Waiter> ws;
  ws.push_back(f.waiter(2, "low", now + 5000));
  ws.push_back(f.waiter(0, "high", now + 5000));
  ASSERT_TRUE(f.sched.enqueue(ws[0], 10, now, f.rng));
  ASSERT_TRUE(f.sched.enqueue(ws[1], 10, now, f.rng));
  EXPECT_EQ(f.sched.waiting(), 2u);
  EXPECT_TRUE(f.sched.must_queue("gpt-4o", 0));   // high waits: even a new high queues
  EXPECT_FALSE(f.sched.must_queue("other", 0));
  EXPECT_TRUE(f.woken.empty());
  // The in-flight request ends: its slot goes to the high waiter, not the low one.
  f.states[0].release();
  f.sched.kick(now + 10, f.rng);
  ASSERT_EQ(f.woken, std::vector<std::string>{"high"});
  EXPECT_TRUE(ws[1].lease);
  EXPECT_FALSE(f.sched.leave(ws[1]));  // dispatched: the lease is the waiter's
  EXPECT_FALSE(f.sched.must_queue("gpt-4o", 1));
  EXPECT_TRUE(f.sched.must_queue("gpt-4o", 2));
  // The low one's deadline passes first: it leaves, nothing is handed to it later.
  EXPECT_TRUE(f.sched.leave(ws[0]));
  f.states[0].release();
  f.sched.kick(now + 20, f.rng);
  EXPECT_EQ(f.woken.size(), 1u);
  EXPECT_EQ(f.sched.waiting(), 0u);
}

TEST(Scheduler, CooldownEndIsTheNextWakeUp) {
  SchedulerFixture f(2);
  TimeMs now = 50'000;
  f.states[0].throttle(now + 1500);
  f.states[1].throttle(now + 900);
  auto w = f.waiter(1, "app", now + 5000);
  ASSERT_TRUE(f.sched.enqueue(w, 10, now, f.rng));  // nothing available: it waits
  EXPECT_TRUE(f.woken.empty());
  auto next = f.sched.next_recovery(now);
  ASSERT_TRUE(next);
  EXPECT_EQ(*next, now + 900);
  f.sched.kick(now + 899, f.rng);
  EXPECT_TRUE(f.woken.empty());
  f.sched.kick(now + 900, f.rng);  // the timer fires at the cooldown's end
  ASSERT_EQ(f.woken.size(), 1u);
  EXPECT_EQ(w.lease->backend, 1u);
  EXPECT_FALSE(f.sched.next_recovery(now + 900));  // nobody waits any more
}

TEST(Scheduler, RespectsTheWaitersAllowedBackends) {
  SchedulerFixture f(2);
  TimeMs now = 1'000;
  std::vector<char> payg_only{0, 1};  // e.g. a low-priority request kept off the PTU
  auto held = pick(f.route, f.slots, PickRequest{now, 0, {}, 1u, {}}, f.rng);  // PAYG busy
  ASSERT_TRUE(held);
  auto w = f.waiter(2, "batch", now + 5000);
  w.allowed = payg_only;
  ASSERT_TRUE(f.sched.enqueue(w, 10, now, f.rng));
  EXPECT_FALSE(w.lease);  // the PTU is free, but not for it
  f.states[1].release();
  f.sched.kick(now + 1, f.rng);
  ASSERT_TRUE(w.lease);
  EXPECT_EQ(w.lease->backend, 1u);
}

TEST(Scheduler, DrainEstimateFromRecentDispatches) {
  SchedulerFixture f(1);
  TimeMs now = 10'000;
  EXPECT_FALSE(f.sched.drain_estimate("gpt-4o", 1, now));
  std::deque<Waiter> ws;
  // One dispatch every 100 ms.
  for (int i = 0; i < 10; ++i) {
    ws.push_back(f.waiter(1, "app", now + 60'000));
    ASSERT_TRUE(f.sched.enqueue(ws.back(), 100, now + i * 100, f.rng));
    f.states[0].release();
  }
  // Five more: the first takes the free backend, four wait behind it; a newcomer would be the
  // fifth to go, in about 5 × 100 ms.
  for (int i = 0; i < 5; ++i) {
    ws.push_back(f.waiter(1, "app", now + 60'000));
    ASSERT_TRUE(f.sched.enqueue(ws.back(), 100, now + 1000, f.rng));
  }
  auto est = f.sched.drain_estimate("gpt-4o", 1, now + 1000);
  ASSERT_TRUE(est);
  EXPECT_NEAR(static_cast<double>(*est), 500.0, 50.0);
}

}  // namespace
}  // namespace tollgate::routing

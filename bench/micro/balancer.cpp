// The balancer's cost per pick: the per-request price of routing (target: well under 1 µs, so
// routing stays invisible next to the proxy's ~30 µs of CPU per request).
//   ninja -C build bench_balancer && ./build/bench/bench_balancer
#include <benchmark/benchmark.h>

#include <deque>
#include <vector>

#include "tollgate/routing/affinity.hpp"
#include "tollgate/routing/balancer.hpp"

namespace {

using namespace tollgate::routing;

struct Setup {
  std::deque<BackendState> states;
  std::vector<Slot> slots;
  Route route;
  std::vector<char> tried;

  Setup(int tier1, int tier2) {
    auto add = [&](int n, std::vector<Member>& tier) {
      for (int i = 0; i < n; ++i) {
        states.emplace_back();
        slots.push_back(Slot{&states.back(), 64});
        tier.push_back(Member{static_cast<std::uint32_t>(slots.size() - 1),
                              static_cast<std::uint32_t>(1 + i % 3)});
      }
    };
    add(tier1, route.tiers.emplace_back());
    add(tier2, route.tiers.emplace_back());
    tried.assign(slots.size(), 0);
  }
};

void BM_PickAndRelease(benchmark::State& st) {
  Setup s(static_cast<int>(st.range(0)), 3);
  Rng rng(7);
  TimeMs now = 1'000'000;
  Signals sig;
  sig.remaining_tokens = 100000;
  for (auto& b : s.states) b.observe(sig, now);
  for (auto _ : st) {
    auto l = pick(s.route, s.slots, PickRequest{now, 500, s.tried, std::nullopt}, rng);
    s.states[l->backend].release();
    s.states[l->backend].record(Outcome::kSuccess, l->trial, now, BreakerPolicy{});
    benchmark::DoNotOptimize(l);
  }
}
BENCHMARK(BM_PickAndRelease)->Arg(1)->Arg(2)->Arg(4)->Arg(16);

// Tier 1 fully throttled: every pick walks it and spills to tier 2.
void BM_PickWithTier1Throttled(benchmark::State& st) {
  Setup s(4, 3);
  Rng rng(7);
  TimeMs now = 1'000'000;
  for (int i = 0; i < 4; ++i) s.states[static_cast<std::size_t>(i)].throttle(now + 60'000);
  for (auto _ : st) {
    auto l = pick(s.route, s.slots, PickRequest{now, 0, s.tried, std::nullopt}, rng);
    s.states[l->backend].release();
    benchmark::DoNotOptimize(l);
  }
}
BENCHMARK(BM_PickWithTier1Throttled);

void BM_AffinityFind(benchmark::State& st) {
  AffinityTable t(100'000, 3'600'000);
  for (int i = 0; i < 100'000; ++i) t.remember("resp_" + std::to_string(i), ObjectOwner{"east", "gpt-4o", "app", ""}, 0);
  int i = 0;
  for (auto _ : st) {
    auto b = t.find("resp_" + std::to_string(i++ % 100'000), 1);
    benchmark::DoNotOptimize(b);
  }
}
BENCHMARK(BM_AffinityFind);

}  // namespace

BENCHMARK_MAIN();

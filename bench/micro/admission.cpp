// Admission's cost per request: the exact prompt estimate of a typical chat body, and the
// reservation and settlement on three buckets (client, tenant, deployment).
//   ninja -C build bench_admission && ./build/bench/bench_admission
#include <benchmark/benchmark.h>

#include <cstring>

#include "tollgate/ratelimit/admission.hpp"
#include "tollgate/ratelimit/bucket.hpp"

namespace {

using namespace tollgate;

const tokenize::Tokenizers& tokenizers() {
  static auto t = [] {
    auto r = tokenize::Tokenizers::load();
    if (!r) throw std::runtime_error(r.error().message);
    return std::move(r).value();
  }();
  return t;
}

constexpr const char* kBody =
    R"({"messages":[{"role":"system","content":"You are a helpful assistant that answers briefly."},)"
    R"({"role":"user","content":"Summarise the following paragraph in two sentences: The gateway )"
    R"(reserves tokens before forwarding and settles them after the response, so that concurrent )"
    R"(requests never overshoot the configured limits by more than the reservations allow."}],)"
    R"("max_tokens":256,"temperature":0.2})";

void BM_EstimateChat(benchmark::State& st) {
  config::PolicyConfig policy;
  for (auto _ : st) {
    auto c = core::classify("POST", "/openai/deployments/d/chat/completions?api-version=2024-10-21",
                            "application/json", kBody);
    auto e = ratelimit::admit(c.call, std::strlen(kBody), nullptr, policy, tokenizers(), "gpt-4o");
    benchmark::DoNotOptimize(e);
  }
}
BENCHMARK(BM_EstimateChat);

void BM_ClassifyOnly(benchmark::State& st) {  // the part of the above that exists without limits
  for (auto _ : st) {
    auto c = core::classify("POST", "/openai/deployments/d/chat/completions?api-version=2024-10-21",
                            "application/json", kBody);
    benchmark::DoNotOptimize(c);
  }
}
BENCHMARK(BM_ClassifyOnly);

void BM_ReserveSettleThreeBuckets(benchmark::State& st) {
  ratelimit::Bucket a, b, c;
  std::vector<ratelimit::Limit> limits = {
      {&a, 1'000'000'000, ratelimit::Scope::kClient, ratelimit::Unit::kTokens, "bot"},
      {&b, 1'000'000'000, ratelimit::Scope::kTenant, ratelimit::Unit::kTokens, "team"},
      {&c, 1'000'000'000, ratelimit::Scope::kDeployment, ratelimit::Unit::kTokens, "gpt-4o"}};
  for (auto _ : st) {
    ratelimit::Reservation r;
    auto now = ratelimit::steady_now_ns();
    benchmark::DoNotOptimize(r.reserve(limits, 300, now));
    r.settle(120, now);
  }
}
BENCHMARK(BM_ReserveSettleThreeBuckets);

}  // namespace

BENCHMARK_MAIN();

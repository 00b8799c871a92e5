// Admission's cost per request: the exact prompt estimate of a typical chat body, the
// reservation and settlement on three buckets (client, tenant, deployment), the same on a
// client's and a tenant's calendar budgets (with the cost), and handing a usage record to the
// ledger (the request path's only ledger work: the SQLite writes happen on its own thread).
//   ninja -C build bench_admission && ./build/bench/bench_admission
#include <benchmark/benchmark.h>

#include <cstring>

#include "tollgate/ratelimit/admission.hpp"
#include "tollgate/ratelimit/budget.hpp"
#include "tollgate/ratelimit/bucket.hpp"
#include "tollgate/usage/ledger.hpp"

#include <filesystem>

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

void BM_ReserveSettleBudgets(benchmark::State& st) {
  ratelimit::BudgetRegistry reg;
  config::BudgetConfig client, tenant;
  client.tokens_per_day = 1'000'000'000'000;
  client.usd_per_month = 1e8;
  tenant.usd_per_month = 1e8;
  std::vector<ratelimit::BudgetLimit> limits;
  std::vector<std::shared_ptr<ratelimit::Budget>> keep;
  ratelimit::add_budgets(reg, ratelimit::Scope::kClient, "bot", client, limits, keep);
  ratelimit::add_budgets(reg, ratelimit::Scope::kTenant, "team", tenant, limits, keep);
  config::PriceConfig pc;
  pc.prompt_per_1k = 0.0025;
  pc.completion_per_1k = 0.01;
  pc.cached_prompt_per_1k = 0.00125;
  pc.reasoning_per_1k = 0.01;
  core::Usage u;
  u.prompt = 180;
  u.completion = 120;
  u.total = 300;
  for (auto _ : st) {
    ratelimit::Price price(pc);
    ratelimit::BudgetHold h;
    auto now = ratelimit::unix_now_ms();
    benchmark::DoNotOptimize(h.reserve(limits, 436, price.ceiling(180, 256), now));
    h.settle(300, price.cost(u), now, nullptr);
  }
}
BENCHMARK(BM_ReserveSettleBudgets);

void BM_LedgerSubmit(benchmark::State& st) {
  auto dir = std::filesystem::temp_directory_path() / "tollgate-bench-ledger";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  {
    usage::Ledger ledger(usage::Options{(dir / "usage.db").string()});
    std::uint64_t n = 0;
    for (auto _ : st) {
      usage::Record r;
      r.time_ms = ratelimit::unix_now_ms();
      r.request_id = "3f0e8f52-5d39-4a43-9a57-" + std::to_string(++n);
      r.client = "bot";
      r.tenant = "team";
      r.deployment = "gpt-4o";
      r.backend = "ptu-eastus";
      r.operation = "chat.completions";
      r.status = 200;
      r.prompt_tokens = 180;
      r.completion_tokens = 120;
      r.outcome = "ok";
      ledger.submit(std::move(r));
    }
    ledger.close(std::chrono::seconds(60));
    // A flood far beyond any real request rate: the writer falls behind and max_buffered drops.
    st.counters["dropped"] = static_cast<double>(ledger.dropped());
  }
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_LedgerSubmit);

// The writer's sustained rate: 100,000 records queued, then the time until all are committed.
void BM_LedgerWriteThroughput(benchmark::State& st) {
  auto dir = std::filesystem::temp_directory_path() / "tollgate-bench-ledger";
  for (auto _ : st) {
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    usage::Ledger ledger(usage::Options{(dir / "usage.db").string(), std::chrono::milliseconds(200), 1000, 200'000});
    for (int i = 0; i < 100'000; ++i) {
      usage::Record r;
      r.time_ms = 1'795'000'000'000 + i;
      r.request_id = "3f0e8f52-5d39-4a43-9a57-" + std::to_string(i);
      r.client = "bot";
      r.tenant = "team";
      r.deployment = "gpt-4o";
      r.backend = "ptu-eastus";
      r.operation = "chat.completions";
      r.outcome = "ok";
      ledger.submit(std::move(r));
    }
    ledger.close(std::chrono::seconds(60));
    if (ledger.written() != 100'000) st.SkipWithError("records lost");
  }
  st.SetItemsProcessed(st.iterations() * 100'000);
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_LedgerWriteThroughput)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

}  // namespace

BENCHMARK_MAIN();

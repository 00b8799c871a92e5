// finish's pure parts: what a request is billed, the settlement, the worker's statistics.

#include "server/pipeline/finish.hpp"

#include <gtest/gtest.h>

#include "stage_env.hpp"

namespace tollgate::pipeline::testing {
namespace {

using metrics::StatusClass;
using metrics::TokenType;

// $1 per 1,000 prompt tokens, $2 per 1,000 completion tokens.
constexpr const char* kPriced = R"(
backends: [{name: east, endpoint: "http://127.0.0.1:1", deployment: gpt-4o, api_key: env:AOAI_KEY}]
deployments:
  - {name: gpt-4o, pools: [{backends: [east]}], price: {prompt_per_1k: 1, completion_per_1k: 2}}
clients: [{name: app, keys: [env:APP_KEY], deployments: ["*"], limits: {tokens_per_minute: 1000}}]
)";

constexpr const char* kChatPath =
    "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21";
constexpr const char* kChat = R"({"messages":[{"role":"user","content":"hi"}],"max_tokens":100})";

core::Usage reported(std::uint64_t prompt, std::uint64_t completion) {
  core::Usage u;
  u.present = true;
  u.prompt = prompt;
  u.completion = completion;
  return u;
}

using BilledUsageTest = StageTest;

TEST_F(BilledUsageTest, TheBackendsUsageWithItsTotal) {
  auto env = StageEnv::from_yaml(kPriced);
  auto& call = env.request("POST", kChatPath, {{"api-key", "sk-app"}}, kChat);
  ASSERT_FALSE(call.run_all());
  call.ctx().usage = reported(12, 30);
  auto billed = billed_usage(call.ctx());
  EXPECT_EQ(billed.total, 42u);
  EXPECT_FALSE(call.ctx().usage_estimated);
}

TEST_F(BilledUsageTest, AnAnswerWithoutUsageIsCountedByTheGateway) {
  auto env = StageEnv::from_yaml(kPriced);
  auto& call = env.request("POST", kChatPath, {{"api-key", "sk-app"}}, kChat);
  ASSERT_FALSE(call.run_all());
  auto& ctx = call.ctx();
  ctx.status = 200;
  ctx.ttfb_us = 1000;
  ctx.output_text = "Hello there";
  auto billed = billed_usage(ctx);
  EXPECT_TRUE(ctx.usage_estimated);
  EXPECT_EQ(billed.prompt, static_cast<std::uint64_t>(ctx.prompt_estimate));
  EXPECT_EQ(billed.completion, 2u);  // "Hello", " there"
  EXPECT_EQ(billed.total, billed.prompt + 2);
}

// Issue 14: with only a ledger (no token limit, no budget) admission does not count the prompt;
// an answer without usage gets it counted then, to the same exact figure.
TEST_F(BilledUsageTest, APromptNoLimitNeededIsCountedOnlyWhenTheAnswerLacksUsage) {
  auto limited = StageEnv::from_yaml(kPriced);
  auto& counted = limited.request("POST", kChatPath, {{"api-key", "sk-app"}}, kChat);
  ASSERT_FALSE(counted.run_all());
  ASSERT_TRUE(counted.ctx().prompt_counted);
  auto env = StageEnv::from_yaml(R"(
backends: [{name: east, endpoint: "http://127.0.0.1:1", deployment: gpt-4o, api_key: env:AOAI_KEY}]
deployments: [{name: gpt-4o, pools: [{backends: [east]}]}]
clients: [{name: app, keys: [env:APP_KEY], deployments: ["*"]}]
)");
  auto& call = env.request("POST", kChatPath, {{"api-key", "sk-app"}}, kChat);
  call.x().ledger = true;
  ASSERT_FALSE(call.run_all());
  auto& ctx = call.ctx();
  EXPECT_TRUE(call.x().accounted);
  EXPECT_FALSE(ctx.prompt_counted);
  EXPECT_EQ(ctx.prompt_estimate, 0);
  ctx.usage = reported(12, 30);
  ctx.status = 200;
  ctx.ttfb_us = 1000;
  EXPECT_EQ(billed_usage(ctx).total, 42u);
  EXPECT_FALSE(ctx.prompt_counted) << "the answer's usage needs no count";
  ctx.usage = {};
  auto billed = billed_usage(ctx);
  EXPECT_TRUE(ctx.prompt_counted);
  EXPECT_GT(billed.prompt, 0u);
  EXPECT_EQ(static_cast<std::int64_t>(billed.prompt), counted.ctx().prompt_estimate);
}

TEST_F(BilledUsageTest, AFailureBeforeAnyTokenCostsNothing) {
  auto env = StageEnv::from_yaml(kPriced);
  auto& call = env.request("POST", kChatPath, {{"api-key", "sk-app"}}, kChat);
  ASSERT_FALSE(call.run_all());
  call.ctx().status = 502;
  auto billed = billed_usage(call.ctx());
  EXPECT_EQ(billed.total, 0u);
  EXPECT_FALSE(call.ctx().usage_estimated);
}

using SettleTest = StageTest;

TEST_F(SettleTest, ChargesTheUseReturnsTheRestAndPricesIt) {
  auto env = StageEnv::from_yaml(kPriced);
  auto& call = env.request("POST", kChatPath, {{"api-key", "sk-app"}}, kChat);
  ASSERT_FALSE(call.run_all());
  const auto& limit = env.auth().client_limits[0][0];
  auto now = env.clock().steady_ns();
  ASSERT_EQ(limit.bucket->available(now, 1000), 1000 - call.ctx().reservation.tokens());
  call.ctx().usage = reported(12, 30);
  settle(call.ctx(), billed_usage(call.ctx()), env.clock());
  EXPECT_EQ(call.ctx().charged_tokens, 42);
  EXPECT_EQ(limit.bucket->available(now, 1000), 1000 - 42);
  EXPECT_EQ(call.ctx().cost_nano_usd, 12'000'000 + 60'000'000);  // 12 × $0.001 + 30 × $0.002
}

// A request reserved a minute before midnight (UTC) and ending after it is charged to the day it
// ended in; the day it started keeps nothing of it.
TEST_F(SettleTest, ChargesABudgetInTheDayTheRequestEnded) {
  auto env = StageEnv::from_yaml(R"(
backends: [{name: east, endpoint: "http://127.0.0.1:1", deployment: gpt-4o, api_key: env:AOAI_KEY}]
deployments: [{name: gpt-4o, pools: [{backends: [east]}]}]
clients: [{name: app, keys: [env:APP_KEY], deployments: ["*"], limits: {budget: {tokens_per_day: 1000}}}]
)");
  auto& call = env.request("POST", kChatPath, {{"api-key", "sk-app"}}, kChat);
  ASSERT_FALSE(call.run_all());
  const auto& b = env.auth().client_budgets[0][0];
  auto started = env.clock().unix_ms();
  ASSERT_TRUE(call.ctx().budget_hold.held());
  env.clock().advance(std::chrono::seconds(90));  // 00:00:30 of the next day
  call.ctx().usage = reported(12, 30);
  settle(call.ctx(), billed_usage(call.ctx()), env.clock());
  EXPECT_EQ(b.budget->used(b.period, env.clock().unix_ms()), 42);
  EXPECT_EQ(b.budget->used(b.period, started), 0);
}

using RecordStatsTest = StageTest;

TEST_F(RecordStatsTest, CountsTheRequestItsTokensAndCostOnDeploymentAndClient) {
  auto env = StageEnv::from_yaml(kPriced);
  auto& call = env.request("POST", kChatPath, {{"api-key", "sk-app"}}, kChat);
  ASSERT_FALSE(call.run_all());
  auto& ctx = call.ctx();
  ctx.status = 200;
  ctx.usage = reported(12, 30);
  settle(ctx, billed_usage(ctx), env.clock());
  env.stats().in_flight.add(1);
  record_stats(env.stats(), ctx, 2'000);
  const auto& route = env.deployment_stats("gpt-4o");
  EXPECT_EQ(route.requests[StatusClass::k2xx].value(), 1u);
  EXPECT_EQ(route.tokens[TokenType::kPrompt].value(), 12u);
  EXPECT_EQ(route.tokens[TokenType::kCompletion].value(), 30u);
  EXPECT_EQ(route.cost_nano_usd.value(), 72'000'000u);
  EXPECT_EQ(route.usage_missing.value(), 0u);
  const auto& client = env.client_stats("app");
  EXPECT_EQ(client.requests[StatusClass::k2xx].value(), 1u);
  EXPECT_EQ(client.charged_tokens.value(), 42u);
  EXPECT_EQ(client.tokens[TokenType::kCompletion].value(), 30u);
  EXPECT_EQ(env.stats().in_flight.value(), 0);
}

TEST_F(RecordStatsTest, ASuccessfulAnswerWithoutExpectedUsageIsCountedAsMissing) {
  auto env = StageEnv::from_yaml(kPriced);
  auto& call = env.request("POST", kChatPath, {{"api-key", "sk-app"}}, kChat);
  ASSERT_FALSE(call.run_all());
  call.ctx().status = 200;
  record_stats(env.stats(), call.ctx(), 2'000);
  EXPECT_EQ(env.deployment_stats("gpt-4o").usage_missing.value(), 1u);
}

TEST_F(RecordStatsTest, ARefusalCountsAsA4xxOfItsClient) {
  auto env = StageEnv::from_yaml(kPriced);
  auto& call = env.request("POST", "/openai/deployments/nope/chat/completions",
                           {{"api-key", "sk-app"}}, kChat);
  auto reply = call.run_all();
  ASSERT_EQ(status(reply), 404);
  EXPECT_EQ(call.ctx().outcome, pipeline::Outcome::kRejected);
  EXPECT_EQ(call.ctx().error, "unknown_deployment");
  call.ctx().status = reply->status;
  record_stats(env.stats(), call.ctx(), 100);
  EXPECT_EQ(env.client_stats("app").requests[StatusClass::k4xx].value(), 1u);
  EXPECT_EQ(env.stats().route(env.snapshot().unrouted_series).requests[StatusClass::k4xx].value(),
            1u);  // unrouted: ("none", "none")
}

}  // namespace
}  // namespace tollgate::pipeline::testing

// admit (policy, rate limits, budgets) and the request_usage filter.

#include <gtest/gtest.h>

#include "stage_env.hpp"

namespace tollgate::pipeline::testing {
namespace {

using ratelimit::Scope;
using ratelimit::Unit;

constexpr const char* kBackend = R"(
backends: [{name: east, endpoint: "http://127.0.0.1:1", deployment: gpt-4o, api_key: env:AOAI_KEY}]
deployments: [{name: gpt-4o, pools: [{backends: [east]}]}]
)";

// kBackend with these clients (and whatever else follows).
std::string with(std::string_view rest) {
  return kBackend + std::string(rest);
}

constexpr const char* kChatPath =
    "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21";
// About 600 tokens with its prompt: two fit in no minute of 1000.
constexpr const char* kChat600 =
    R"({"messages":[{"role":"user","content":"hi"}],"max_tokens":600})";

using AdmitTest = StageTest;

TEST_F(AdmitTest, MoreChoicesThanThePolicyAllowsIs400) {
  auto env = StageEnv::from_yaml(with(R"(
policy: {max_n: 2}
clients: [{name: app, keys: [env:APP_KEY], deployments: ["*"]}]
)"));
  auto reply = env.request("POST", kChatPath, {{"api-key", "sk-app"}},
                           R"({"messages":[{"role":"user","content":"hi"}],"n":4})")
                   .run(admit);
  EXPECT_EQ(status(reply), 400);
  EXPECT_EQ(reply->reason, "over_policy");
  EXPECT_EQ(error_message(reply), "n may be at most 2 on this gateway");
  EXPECT_EQ(error_field(reply, "param"), "n");
}

TEST_F(AdmitTest, ATokenLimitWithoutRoomIs429WithTheWaitAndTheLimitsHeaders) {
  auto env = StageEnv::from_yaml(with(R"(
clients: [{name: app, keys: [env:APP_KEY], deployments: ["*"], limits: {tokens_per_minute: 1000}}]
)"));
  auto& first = env.request("POST", kChatPath, {{"api-key", "sk-app"}}, kChat600);
  ASSERT_FALSE(first.run(admit));
  auto held = first.ctx().reservation.tokens();
  EXPECT_EQ(held, first.ctx().prompt_estimate + 600);
  ASSERT_GT(2 * held, 1000);  // (the test's premise)

  auto reply = env.request("POST", kChatPath, {{"api-key", "sk-app"}}, kChat600).run(admit);
  EXPECT_EQ(status(reply), 429);
  EXPECT_EQ(reply->reason, "rate_limited");
  // 60 ms per token: the missing ones take this long to come back.
  auto wait_ms = 2 * held * 60 - 60'000;
  EXPECT_EQ(header(reply, "retry-after-ms"), std::to_string(wait_ms));
  EXPECT_EQ(header(reply, "retry-after"), std::to_string((wait_ms + 999) / 1000));
  EXPECT_EQ(header(reply, "x-ratelimit-limit-tokens"), "1000");
  EXPECT_EQ(header(reply, "x-ratelimit-remaining-tokens"), std::to_string(1000 - held));
  EXPECT_EQ(error_message(reply),
            "Rate limit of client 'app' (1000 tokens per minute) exceeded. Please retry after " +
                std::to_string((wait_ms + 999) / 1000) + " seconds.");
  EXPECT_EQ(env.client_stats("app").rate_limited.at(Scope::kClient, Unit::kTokens).value(), 1u);
  EXPECT_EQ(env.stats().reservations.value(), 1);  // the first request's only
}

TEST_F(AdmitTest, ATokenLimitRefillsWithTime) {
  auto env = StageEnv::from_yaml(with(R"(
clients: [{name: app, keys: [env:APP_KEY], deployments: ["*"], limits: {tokens_per_minute: 1000}}]
)"));
  ASSERT_FALSE(env.request("POST", kChatPath, {{"api-key", "sk-app"}}, kChat600).run(admit));
  env.clock().advance(std::chrono::minutes(1));
  EXPECT_FALSE(env.request("POST", kChatPath, {{"api-key", "sk-app"}}, kChat600).run(admit));
}

TEST_F(AdmitTest, ARequestLargerThanTheLimitIs400) {
  auto env = StageEnv::from_yaml(with(R"(
clients: [{name: app, keys: [env:APP_KEY], deployments: ["*"], limits: {tokens_per_minute: 1000}}]
)"));
  auto& call = env.request("POST", kChatPath, {{"api-key", "sk-app"}},
                           R"({"messages":[{"role":"user","content":"hi"}],"max_tokens":5000})");
  auto reply = call.run(admit);
  EXPECT_EQ(status(reply), 400);
  EXPECT_EQ(reply->reason, "over_limit");
  EXPECT_EQ(error_message(reply), "This request needs about " +
                                      std::to_string(call.ctx().prompt_estimate + 5000) +
                                      " tokens, more than the limit of client 'app' (1000 tokens "
                                      "per minute) allows: lower max_tokens or split the input.");
  EXPECT_EQ(env.client_stats("app").rate_limited.at(Scope::kClient, Unit::kTokens).value(), 0u);
}

TEST_F(AdmitTest, ATenantLimitCountsAllItsClients) {
  auto env = StageEnv::from_yaml(with(R"(
tenants: [{name: contoso, limits: {tokens_per_minute: 1000}}]
clients:
  - {name: app, keys: [env:APP_KEY], deployments: ["*"], tenant: contoso}
  - {name: bot, keys: [env:OTHER_KEY], deployments: ["*"], tenant: contoso}
)"));
  ASSERT_FALSE(env.request("POST", kChatPath, {{"api-key", "sk-app"}}, kChat600).run(admit));
  auto reply = env.request("POST", kChatPath, {{"api-key", "sk-other"}}, kChat600).run(admit);
  EXPECT_EQ(status(reply), 429);
  EXPECT_EQ(env.client_stats("bot").rate_limited.at(Scope::kTenant, Unit::kTokens).value(), 1u);
}

TEST_F(AdmitTest, AnExhaustedDailyBudgetIs429InsufficientQuotaUntilMidnight) {
  auto env = StageEnv::from_yaml(with(R"(
clients: [{name: app, keys: [env:APP_KEY], deployments: ["*"], limits: {budget: {tokens_per_day: 1000}}}]
)"));
  using ratelimit::BudgetRegistry;
  using ratelimit::Period;
  env.budgets()
      .get(BudgetRegistry::key(Scope::kClient, "app", Period::kDay, ratelimit::Measure::kTokens))
      ->seed(500, ratelimit::period_index(Period::kDay, env.clock().unix_ms()));
  auto& call = env.request("POST", kChatPath, {{"api-key", "sk-app"}}, kChat600);
  auto reply = call.run(admit);
  EXPECT_EQ(status(reply), 429);
  EXPECT_EQ(error_code(reply), "insufficient_quota");
  EXPECT_EQ(reply->reason, "budget_exhausted");
  EXPECT_EQ(header(reply, "x-should-retry"), "false");
  EXPECT_EQ(header(reply, "retry-after"), "60");  // the fake clock is at 23:59:00 UTC
  EXPECT_EQ(error_message(reply),
            "The daily token budget of client 'app' (1000 tokens) is used up: 500 tokens "
            "used, and this request may need up to " +
                std::to_string(call.ctx().prompt_estimate + 600) +
                " tokens. It resets at 2026-03-11T00:00:00Z.");
  EXPECT_EQ(env.client_stats("app")
                .budget_refused.at(Scope::kClient, Period::kDay, ratelimit::Measure::kTokens)
                .value(),
            1u);
  EXPECT_FALSE(call.ctx().budget_hold.held());
}

TEST_F(AdmitTest, ABudgetHeldByRequestsInFlightIsARetryable429) {
  auto env = StageEnv::from_yaml(with(R"(
clients: [{name: app, keys: [env:APP_KEY], deployments: ["*"], limits: {budget: {tokens_per_day: 1000}}}]
)"));
  auto& first = env.request("POST", kChatPath, {{"api-key", "sk-app"}}, kChat600);
  ASSERT_FALSE(first.run(admit));
  EXPECT_TRUE(first.ctx().budget_hold.held());
  auto reply = env.request("POST", kChatPath, {{"api-key", "sk-app"}}, kChat600).run(admit);
  EXPECT_EQ(status(reply), 429);
  EXPECT_EQ(reply->reason, "budget_busy");
  EXPECT_EQ(header(reply, "retry-after-ms"), "1000");
  EXPECT_EQ(header(reply, "x-should-retry"), std::nullopt);
  EXPECT_EQ(error_message(reply),
            "Requests in flight hold the rest of the daily token budget of client 'app' (1000 "
            "tokens). Please retry after 1 second.");
}

TEST_F(AdmitTest, AnAdmittedRequestCarriesItsRemainingQuotaAndIsCounted) {
  auto env = StageEnv::from_yaml(with(R"(
clients:
  - {name: app, keys: [env:APP_KEY], deployments: ["*"], limits: {tokens_per_minute: 1000, requests_per_minute: 10}}
)"));
  auto& call = env.request("POST", kChatPath, {{"api-key", "sk-app"}}, kChat600);
  EXPECT_FALSE(call.run(admit));
  auto held = call.ctx().reservation.tokens();
  EXPECT_EQ(call.ctx().response_headers,
            "x-ratelimit-limit-tokens: 1000\r\n"
            "x-ratelimit-remaining-tokens: " +
                std::to_string(1000 - held) +
                "\r\n"
                "x-ratelimit-limit-requests: 10\r\n"
                "x-ratelimit-remaining-requests: 9\r\n");
  EXPECT_TRUE(call.x().accounted);
  EXPECT_EQ(env.stats().reservations.value(), 1);
  EXPECT_EQ(env.deployment_stats("gpt-4o").class_requests[metrics::ClassRank{1}].value(), 1u);
}

TEST_F(AdmitTest, AnAnonymousCallerWithoutLimitsIsNotAccounted) {
  auto env = StageEnv::from_yaml(with("auth: {allow_anonymous: true}\n"));
  auto& call = env.request("POST", kChatPath, {}, kChat600);
  EXPECT_FALSE(call.run(admit));
  EXPECT_FALSE(call.x().accounted);
  EXPECT_FALSE(call.ctx().reservation.held());
  EXPECT_EQ(env.stats().reservations.value(), 0);
  EXPECT_EQ(call.ctx().response_headers, "");
}

TEST_F(AdmitTest, ADeploymentLimitHoldsAnonymousCallersToo) {
  auto env = StageEnv::from_yaml(R"(
auth: {allow_anonymous: true}
backends: [{name: east, endpoint: "http://127.0.0.1:1", deployment: gpt-4o, api_key: env:AOAI_KEY}]
deployments: [{name: gpt-4o, pools: [{backends: [east]}], limits: {requests_per_minute: 1}}]
)");
  ASSERT_FALSE(env.request("POST", kChatPath, {}, kChat600).run(admit));
  auto reply = env.request("POST", kChatPath, {}, kChat600).run(admit);
  EXPECT_EQ(status(reply), 429);
  EXPECT_EQ(header(reply, "x-ratelimit-limit-requests"), "1");
  EXPECT_EQ(header(reply, "retry-after-ms"), "60000");
  EXPECT_EQ(
      env.client_stats("anonymous").rate_limited.at(Scope::kDeployment, Unit::kRequests).value(),
      1u);
}

using RequestUsageTest = StageTest;

constexpr const char* kStream = R"({"messages":[{"role":"user","content":"hi"}],"stream":true})";

TEST_F(RequestUsageTest, AnAccountedStreamAsksForItsUsageAndStripsIt) {
  auto env = StageEnv::from_yaml(
      with("clients: [{name: app, keys: [env:APP_KEY], deployments: [\"*\"]}]\n"));
  auto& call = env.request("POST", kChatPath, {{"api-key", "sk-app"}}, kStream);
  call.filter(request_usage);
  const auto& c = call.ctx().call;
  EXPECT_EQ(nlohmann::ordered_json::parse(c.edits.apply(c.body))["stream_options"],
            nlohmann::ordered_json({{"include_usage", true}}));
  EXPECT_TRUE(call.ctx().strip_usage);
}

TEST_F(RequestUsageTest, TheClientsStreamOptionsGetIncludeUsageSplicedIn) {
  auto env = StageEnv::from_yaml(
      with("clients: [{name: app, keys: [env:APP_KEY], deployments: [\"*\"]}]\n"));
  for (auto [sent, forwarded] : std::initializer_list<std::pair<std::string_view, std::string_view>>{
           {R"({"messages":[],"stream":true,"stream_options":{"include_usage":false}})",
            R"({"messages":[],"stream":true,"stream_options":{"include_usage":true}})"},
           {R"({"messages":[],"stream":true,"stream_options":{ }})",
            R"({"messages":[],"stream":true,"stream_options":{"include_usage":true }})"},
           {R"({"messages":[],"stream":true,"stream_options":{"x":1}})",
            R"({"messages":[],"stream":true,"stream_options":{"include_usage":true,"x":1}})"},
           {R"({"messages":[],"stream":true,"stream_options":null})",
            R"({"messages":[],"stream":true,"stream_options":{"include_usage":true}})"}}) {
    auto body = std::string(sent);
    body.replace(body.find("[]"), 2, R"([{"role":"user","content":"hi"}])");
    auto want = std::string(forwarded);
    want.replace(want.find("[]"), 2, R"([{"role":"user","content":"hi"}])");
    auto& call = env.request("POST", kChatPath, {{"api-key", "sk-app"}}, body);
    call.filter(request_usage);
    const auto& c = call.ctx().call;
    EXPECT_EQ(c.edits.apply(c.body), want);
    EXPECT_TRUE(call.ctx().strip_usage);
  }
}

TEST_F(RequestUsageTest, AStreamThatAskedForUsageKeepsIt) {
  auto env = StageEnv::from_yaml(
      with("clients: [{name: app, keys: [env:APP_KEY], deployments: [\"*\"]}]\n"));
  auto& call = env.request(
      "POST", kChatPath, {{"api-key", "sk-app"}},
      R"({"messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}})");
  call.filter(request_usage);
  EXPECT_TRUE(call.ctx().call.edits.empty());
  EXPECT_FALSE(call.ctx().strip_usage);
}

TEST_F(RequestUsageTest, AnUnaccountedStreamIsLeftAlone) {
  auto env = StageEnv::from_yaml(with("auth: {allow_anonymous: true}\n"));
  auto& call = env.request("POST", kChatPath, {}, kStream);
  call.filter(request_usage);
  EXPECT_TRUE(call.ctx().call.edits.empty());
  EXPECT_FALSE(call.ctx().strip_usage);
}

TEST_F(RequestUsageTest, AnAnswerThatIsNotStreamedIsLeftAlone) {
  auto env = StageEnv::from_yaml(
      with("clients: [{name: app, keys: [env:APP_KEY], deployments: [\"*\"]}]\n"));
  auto& call = env.request("POST", kChatPath, {{"api-key", "sk-app"}}, kChat600);
  call.filter(request_usage);
  EXPECT_TRUE(call.ctx().call.edits.empty());
  EXPECT_FALSE(call.ctx().strip_usage);
}

}  // namespace
}  // namespace tollgate::pipeline::testing

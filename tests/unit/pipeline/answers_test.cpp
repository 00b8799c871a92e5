// The routing step's answers when capacity is missing: no_backend and shed.

#include <gtest/gtest.h>

#include "stage_env.hpp"

namespace tollgate::pipeline::testing {
namespace {

constexpr const char* kOneBackend = R"(
priority:
  classes:
    - {name: high, max_queue_wait: 10m}
    - {name: normal, max_queue_wait: 30s}
  default: normal
  header: x-tollgate-priority
backends: [{name: east, endpoint: "http://127.0.0.1:1", deployment: gpt-4o, api_key: env:AOAI_KEY}]
deployments: [{name: gpt-4o, pools: [{backends: [east]}]}]
auth: {allow_anonymous: true}
clients: [{name: vip, keys: [env:APP_KEY], deployments: ["*"], priority: high}]
)";

constexpr const char* kChat = R"({"messages":[{"role":"user","content":"hi"}]})";
constexpr const char* kChatPath =
    "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21";

using NoBackendTest = StageTest;

TEST_F(NoBackendTest, ARecoveryWithinAMinuteIs429WithTheWait) {
  auto env = StageEnv::from_yaml(kOneBackend);
  auto& call = env.request("POST", kChatPath, {}, kChat);
  ASSERT_FALSE(call.run_all());
  auto now = env.clock().steady_ms();
  env.backend_state("east").throttle(now + 1'500);
  auto reply = no_backend(call.x(), now);
  EXPECT_EQ(reply.status, 429);
  EXPECT_EQ(reply.reason, "no_backend_available");
  EXPECT_EQ(reply.outcome, pipeline::Outcome::kNoBackend);
  EXPECT_EQ(header(reply, "retry-after-ms"), "1500");
  EXPECT_EQ(header(reply, "retry-after"), "2");
  EXPECT_EQ(error_message(reply),
            "All backends of deployment 'gpt-4o' are at capacity. Please retry after 2 seconds.");
  EXPECT_EQ(env.deployment_stats("gpt-4o").no_backend[metrics::NoBackendCode::k429].value(), 1u);
  EXPECT_EQ(call.ctx().series, env.snapshot().deployments[0].series_none);
}

TEST_F(NoBackendTest, ALaterRecoveryIs503WithoutRetry) {
  auto env = StageEnv::from_yaml(kOneBackend);
  auto& call = env.request("POST", kChatPath, {}, kChat);
  ASSERT_FALSE(call.run_all());
  auto now = env.clock().steady_ms();
  env.backend_state("east").throttle(now + 120'000);
  auto reply = no_backend(call.x(), now);
  EXPECT_EQ(reply.status, 503);
  EXPECT_EQ(header(reply, "x-should-retry"), "false");
  EXPECT_EQ(header(reply, "retry-after"), "120");
  EXPECT_EQ(header(reply, "retry-after-ms"), std::nullopt);
  EXPECT_EQ(env.deployment_stats("gpt-4o").no_backend[metrics::NoBackendCode::k503].value(), 1u);
  EXPECT_EQ(env.deployment_stats("gpt-4o").no_backend[metrics::NoBackendCode::k429].value(), 0u);
}

TEST_F(NoBackendTest, NoKnownRecoveryIs503WithoutRetryAfter) {
  auto env = StageEnv::from_yaml(kOneBackend);
  auto& call = env.request("POST", kChatPath, {}, kChat);
  ASSERT_FALSE(call.run_all());
  env.backend_state("east").set_probe_healthy(false);
  auto reply = no_backend(call.x(), env.clock().steady_ms());
  EXPECT_EQ(reply.status, 503);
  EXPECT_EQ(header(reply, "x-should-retry"), "false");
  EXPECT_EQ(header(reply, "retry-after"), std::nullopt);
}

using ShedTest = StageTest;

TEST_F(ShedTest, AWaitThatEndedWithoutCapacityIs429) {
  auto env = StageEnv::from_yaml(kOneBackend);
  auto& call = env.request("POST", kChatPath, {}, kChat);
  ASSERT_FALSE(call.run_all());
  // Nothing drained lately: half the class's wait.
  auto reply = shed(call.x(), metrics::ShedReason::kDeadline, env.clock().steady_ms());
  EXPECT_EQ(reply.status, 429);
  EXPECT_EQ(reply.reason, "queue_timeout");
  EXPECT_EQ(reply.outcome, pipeline::Outcome::kShed);
  EXPECT_EQ(header(reply, "retry-after-ms"), "15000");
  EXPECT_EQ(error_message(reply),
            "No capacity of deployment 'gpt-4o' became available while this request of priority "
            "'normal' could wait. Please retry after 15 seconds.");
}

TEST_F(ShedTest, AFullQueueIs429) {
  auto env = StageEnv::from_yaml(kOneBackend);
  auto& call = env.request("POST", kChatPath, {}, kChat);
  ASSERT_FALSE(call.run_all());
  auto reply = shed(call.x(), metrics::ShedReason::kQueueFull, env.clock().steady_ms());
  EXPECT_EQ(reply.status, 429);
  EXPECT_EQ(reply.reason, "queue_full");
  EXPECT_EQ(error_message(reply),
            "Too many requests of priority 'normal' are waiting for deployment 'gpt-4o'. Please "
            "retry after 15 seconds.");
}

TEST_F(ShedTest, ABacklogBeyondAMinuteIs503) {
  auto env = StageEnv::from_yaml(kOneBackend);
  auto& call = env.request("POST", kChatPath, {{"api-key", "sk-app"}}, kChat);
  ASSERT_FALSE(call.run_all());
  auto reply = shed(call.x(), metrics::ShedReason::kQueueFull, env.clock().steady_ms());
  EXPECT_EQ(reply.status, 503);
  EXPECT_EQ(reply.outcome, pipeline::Outcome::kShed);
  EXPECT_EQ(header(reply, "x-should-retry"), "false");
  EXPECT_EQ(header(reply, "retry-after"), "300");
  EXPECT_EQ(error_message(reply),
            "Too many requests of priority 'high' are waiting for deployment 'gpt-4o'. The backlog "
            "will not clear within a minute.");
}

}  // namespace
}  // namespace tollgate::pipeline::testing

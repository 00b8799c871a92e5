// prioritize: the class (default, the client's, lowered by the header), its tiers and its wait.

#include <gtest/gtest.h>

#include "stage_env.hpp"

namespace tollgate::pipeline::testing {
namespace {

using namespace std::chrono_literals;

// A PTU tier for high (normal may use it while it is less than half busy), pay-as-you-go for all.
constexpr const char* kClasses = R"(
priority:
  classes:
    - {name: high, max_queue_wait: 10s}
    - {name: normal, max_queue_wait: 30s}
    - {name: low}
  header: x-tollgate-priority
backends:
  - {name: ptu, endpoint: "http://127.0.0.1:1", deployment: gpt-4o, api_key: env:AOAI_KEY, max_in_flight: 4}
  - {name: payg, endpoint: "http://127.0.0.1:2", deployment: gpt-4o, api_key: env:AOAI_KEY}
deployments:
  - name: gpt-4o
    pools:
      - {backends: [ptu], classes: [high], spare: {classes: [normal], max_utilization: 0.5}}
      - {backends: [payg]}
clients:
  - {name: app, keys: [env:APP_KEY], deployments: ["*"]}
  - {name: vip, keys: [env:OTHER_KEY], deployments: ["*"], priority: high}
)";

constexpr const char* kChat = R"({"messages":[{"role":"user","content":"hi"}]})";
constexpr const char* kChatPath =
    "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21";

using PrioritizeTest = StageTest;

TEST_F(PrioritizeTest, AClientWithoutPriorityGetsTheDefaultClass) {
  auto env = StageEnv::from_yaml(kClasses);
  auto& call = env.request("POST", kChatPath, {{"api-key", "sk-app"}}, kChat);
  EXPECT_FALSE(call.run(prioritize));
  EXPECT_EQ(call.x().plan.cls, 1u);
  EXPECT_EQ(call.ctx().priority, "normal");
  EXPECT_EQ(call.x().plan.klass, &env.config().priority.classes[1]);
}

TEST_F(PrioritizeTest, TheHeaderLowersTheClass) {
  auto env = StageEnv::from_yaml(kClasses);
  auto& call = env.request("POST", kChatPath,
                           {{"api-key", "sk-other"}, {"x-tollgate-priority", "low"}}, kChat);
  EXPECT_FALSE(call.run(prioritize));
  EXPECT_EQ(call.ctx().priority, "low");
  EXPECT_FALSE(call.x().plan.wait);  // low never waits
}

TEST_F(PrioritizeTest, TheHeaderNeverRaisesTheClass) {
  auto env = StageEnv::from_yaml(kClasses);
  auto& call = env.request("POST", kChatPath,
                           {{"api-key", "sk-app"}, {"x-tollgate-priority", "high"}}, kChat);
  EXPECT_FALSE(call.run(prioritize));
  EXPECT_EQ(call.ctx().priority, "normal");
}

TEST_F(PrioritizeTest, AnUnknownClassIs400NamingTheClasses) {
  auto env = StageEnv::from_yaml(kClasses);
  auto reply = env.request("POST", kChatPath,
                           {{"api-key", "sk-app"}, {"x-tollgate-priority", "urgent"}}, kChat)
                   .run(prioritize);
  EXPECT_EQ(status(reply), 400);
  EXPECT_EQ(error_code(reply), "invalid_request");
  EXPECT_EQ(error_message(reply),
            "the x-tollgate-priority header names no priority class (high, normal, low)");
  EXPECT_EQ(reply->reason, "bad_priority");
}

TEST_F(PrioritizeTest, TheClassDecidesHowLongTheRequestMayWait) {
  auto env = StageEnv::from_yaml(kClasses);
  env.clock().advance(5s);
  auto& call = env.request("POST", kChatPath, {{"api-key", "sk-app"}}, kChat);
  EXPECT_FALSE(call.run(prioritize));
  EXPECT_TRUE(call.x().plan.wait);
  EXPECT_EQ(call.x().plan.deadline, env.clock().steady_ms() + 30'000);
}

TEST_F(PrioritizeTest, TheClientsTimeoutHeaderShortensTheWait) {
  auto env = StageEnv::from_yaml(kClasses);
  auto& call = env.request("POST", kChatPath,
                           {{"api-key", "sk-app"}, {"x-ms-client-request-timeout", "2.5"}}, kChat);
  EXPECT_FALSE(call.run(prioritize));
  EXPECT_EQ(call.x().plan.deadline, env.clock().steady_ms() + 2'500);
}

TEST_F(PrioritizeTest, ALongerTimeoutHeaderDoesNotLengthenTheWait) {
  auto env = StageEnv::from_yaml(kClasses);
  auto& call = env.request("POST", kChatPath,
                           {{"api-key", "sk-app"}, {"x-ms-client-request-timeout", "600"}}, kChat);
  EXPECT_FALSE(call.run(prioritize));
  EXPECT_EQ(call.x().plan.deadline, env.clock().steady_ms() + 30'000);
}

TEST_F(PrioritizeTest, TheReservedTierIsForTheHighClass) {
  auto env = StageEnv::from_yaml(kClasses);
  auto& vip = env.request("POST", kChatPath, {{"api-key", "sk-other"}}, kChat);
  EXPECT_FALSE(vip.run(prioritize));
  EXPECT_TRUE(vip.x().allowed.allows(0));  // ptu
  EXPECT_TRUE(vip.x().allowed.allows(1));  // payg
  auto& lowered = env.request("POST", kChatPath,
                              {{"api-key", "sk-other"}, {"x-tollgate-priority", "low"}}, kChat);
  EXPECT_FALSE(lowered.run(prioritize));
  EXPECT_FALSE(lowered.x().allowed.allows(0));
  EXPECT_TRUE(lowered.x().allowed.allows(1));
}

TEST_F(PrioritizeTest, ASpareClassUsesTheReservedTierOnlyWhileItIsLessThanHalfBusy) {
  auto env = StageEnv::from_yaml(kClasses);
  auto& idle = env.request("POST", kChatPath, {{"api-key", "sk-app"}}, kChat);
  EXPECT_FALSE(idle.run(prioritize));
  EXPECT_TRUE(idle.x().allowed.allows(0));
  auto& ptu = env.backend_state("ptu");
  ASSERT_TRUE(ptu.try_acquire(4));
  ASSERT_TRUE(ptu.try_acquire(4));  // 2 of 4: not below 0.5
  auto& busy = env.request("POST", kChatPath, {{"api-key", "sk-app"}}, kChat);
  EXPECT_FALSE(busy.run(prioritize));
  EXPECT_FALSE(busy.x().allowed.allows(0));
  EXPECT_TRUE(busy.x().allowed.allows(1));
}

}  // namespace
}  // namespace tollgate::pipeline::testing

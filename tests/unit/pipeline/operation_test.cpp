// check_operation: an operation the gateway does not know is refused unless the deployment lists
// it in `passthrough`; a passthrough call is billed from its answer.

#include <gtest/gtest.h>

#include "server/pipeline/finish.hpp"
#include "stage_env.hpp"

namespace tollgate::pipeline::testing {
namespace {

// gpt-4o forwards audio transcriptions; mini forwards nothing unknown.
constexpr const char* kPassthrough = R"(
backends:
  - {name: east, endpoint: "http://127.0.0.1:1", deployment: gpt-4o, api_key: env:AOAI_KEY}
  - {name: small, endpoint: "http://127.0.0.1:2", deployment: mini, api_key: env:AOAI_KEY}
deployments:
  - {name: gpt-4o, pools: [{backends: [east]}], passthrough: [Audio/Transcriptions]}
  - {name: mini, pools: [{backends: [small]}]}
clients: [{name: app, keys: [env:APP_KEY], deployments: ["*"]}]
)";

constexpr const char* kKey = "sk-app";

using CheckOperationTest = StageTest;

TEST_F(CheckOperationTest, AnUnknownOperationIs404OperationNotSupported) {
  auto env = StageEnv::from_yaml(kPassthrough);
  for (const char* target : {"/openai/deployments/mini/audio/transcriptions?api-version=1",
                             "/openai/deployments/gpt-4o/images/generations?api-version=1",
                             "/openai/deployments/gpt-4o/responses?api-version=1"}) {
    auto reply =
        env.request("POST", target, {{"api-key", kKey}}, R"({"prompt":"x"})").run(check_operation);
    EXPECT_EQ(status(reply), 404) << target;
    EXPECT_EQ(error_code(reply), "OperationNotSupported") << target;
    EXPECT_EQ(reply->reason, "unsupported_operation") << target;
  }
  auto reply = env.request("POST", "/v1/Images/Generations/", {{"api-key", kKey}},
                           R"({"model":"gpt-4o","prompt":"x"})")
                   .run(check_operation);
  EXPECT_EQ(status(reply), 404);
  EXPECT_EQ(error_message(reply),
            "The operation 'Images/Generations' is not supported on deployment 'gpt-4o' by this "
            "gateway (list it in the deployment's passthrough to forward it).");
}

TEST_F(CheckOperationTest, AListedOperationGoesOnInAnySpellingAndIsBilled) {
  auto env = StageEnv::from_yaml(kPassthrough);
  for (const char* target : {"/openai/deployments/gpt-4o/audio/transcriptions?api-version=1",
                             "/openai/deployments/gpt-4o/AUDIO/./transcriptions/?api-version=1",
                             "/openai/v1/audio/%74ranscriptions"}) {
    auto& call = env.request("POST", target, {{"api-key", kKey}}, R"({"model":"gpt-4o"})");
    EXPECT_FALSE(call.run(check_operation)) << target;
    EXPECT_TRUE(call.ctx().passthrough) << target;
    EXPECT_EQ(call.ctx().call.op_path, "audio/transcriptions") << target;  // as configured
  }
}

TEST_F(CheckOperationTest, KnownOperationsAndTheAzureOtherSurfaceAreNotChecked) {
  auto env = StageEnv::from_yaml(kPassthrough);
  struct Case {
    const char* method;
    const char* target;
    const char* body;
  };
  for (auto c : {Case{"POST", "/openai/deployments/mini/chat/completions?api-version=1",
                      R"({"messages":[{"role":"user","content":"hi"}]})"},
                 Case{"POST", "/v1/embeddings", R"({"model":"mini","input":"x"})"},
                 Case{"POST", "/openai/v1/responses", R"({"model":"mini","input":"x"})"},
                 Case{"GET", "/openai/v1/files", ""},
                 Case{"POST", "/openai/v1/threads", R"({})"},
                 Case{"POST", "/openai/v1/fine_tuning/jobs", R"({"model":"base"})"},
                 Case{"POST", "/openai/images/generations?api-version=1", R"({"model":"mini"})"}}) {
    auto& call = env.request(c.method, c.target, {{"api-key", kKey}}, c.body);
    EXPECT_FALSE(call.run(check_operation)) << c.target;
    EXPECT_FALSE(call.ctx().passthrough) << c.target;
  }
}

TEST_F(CheckOperationTest, APassthroughAnswerIsBilledFromItsUsageElseItsStreamedText) {
  auto env = StageEnv::from_yaml(kPassthrough);
  auto& call = env.request("POST", "/openai/deployments/gpt-4o/audio/transcriptions?api-version=1",
                           {{"api-key", kKey}}, R"({"stream":true})");
  call.x().ledger = true;
  ASSERT_FALSE(call.run_all());
  auto& ctx = call.ctx();
  EXPECT_TRUE(call.x().accounted);  // the ledger records it
  EXPECT_TRUE(ctx.count_output);    // its streamed text is kept
  ctx.status = 200;
  ctx.ttfb_us = 1000;
  EXPECT_EQ(billed_usage(ctx).total, 0u);  // no usage, no text: nothing
  EXPECT_FALSE(ctx.usage_estimated);
  ctx.output_text = "Hello there";
  auto counted = billed_usage(ctx);
  EXPECT_TRUE(ctx.usage_estimated);
  EXPECT_EQ(counted.completion, 2u);
  ctx.usage.present = true;
  ctx.usage.prompt = 7;
  ctx.usage.completion = 3;
  EXPECT_EQ(billed_usage(ctx).total, 10u);
}

TEST_F(CheckOperationTest, AnUnknownOperationAnswerWithoutPassthroughIsNotCounted) {
  auto env = StageEnv::from_yaml(kPassthrough);
  auto& call = env.request("GET", "/openai/files?api-version=1", {{"api-key", kKey}});
  ASSERT_FALSE(call.run_all());
  auto& ctx = call.ctx();
  ctx.status = 200;
  ctx.ttfb_us = 1000;
  ctx.output_text = "Hello there";
  EXPECT_EQ(billed_usage(ctx).total, 0u);
}

}  // namespace
}  // namespace tollgate::pipeline::testing

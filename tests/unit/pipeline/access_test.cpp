// The header stages (authenticate, classify_target, authorize_target) and the request stages
// classify, list_models, route, authorize.

#include <gtest/gtest.h>

#include "stage_env.hpp"

namespace tollgate::pipeline::testing {
namespace {

// Two deployments; `app` may use gpt-4o only, `ops` all and has a tenant.
constexpr const char* kTwoDeployments = R"(
backends:
  - {name: east, endpoint: "http://127.0.0.1:1", deployment: gpt-4o, api_key: env:AOAI_KEY, region: eastus}
  - {name: west, endpoint: "http://127.0.0.1:2", deployment: gpt-4o, api_key: env:AOAI_KEY, region: westeurope}
deployments:
  - {name: gpt-4o, pools: [{backends: [east, west]}]}
  - {name: mini, model: gpt-4o-mini, pools: [{backends: [east]}]}
tenants: [{name: contoso}]
clients:
  - {name: app, keys: [env:APP_KEY], deployments: [gpt-4o]}
  - {name: ops, keys: [env:OTHER_KEY], deployments: ["*"], tenant: contoso}
)";

constexpr const char* kChat = R"({"messages":[{"role":"user","content":"hi"}]})";
constexpr const char* kChatPath =
    "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21";

using AuthenticateTest = StageTest;

TEST_F(AuthenticateTest, NoKeyIs401WithABearerChallenge) {
  auto env = StageEnv::from_yaml(kTwoDeployments);
  auto reply = env.request("POST", kChatPath, {}, kChat).run(authenticate);
  EXPECT_EQ(status(reply), 401);
  EXPECT_EQ(error_code(reply), "401");
  EXPECT_EQ(reply->reason, "missing_credentials");
  EXPECT_EQ(header(reply, "www-authenticate"), "Bearer realm=\"tollgate\"");
}

TEST_F(AuthenticateTest, UnknownKeyIs401) {
  auto env = StageEnv::from_yaml(kTwoDeployments);
  auto reply = env.request("POST", kChatPath, {{"api-key", "sk-nobody"}}, kChat).run(authenticate);
  EXPECT_EQ(status(reply), 401);
  EXPECT_EQ(reply->reason, "unknown_key");
  EXPECT_EQ(reply->outcome, pipeline::Outcome::kRejected);
}

TEST_F(AuthenticateTest, ClientKeyNamesClientTenantAndSeries) {
  auto env = StageEnv::from_yaml(kTwoDeployments);
  auto& call = env.request("POST", kChatPath, {{"api-key", "sk-other"}}, kChat);
  EXPECT_FALSE(call.run(authenticate));
  EXPECT_EQ(call.ctx().client, "ops");
  EXPECT_EQ(call.ctx().tenant, "contoso");
  EXPECT_EQ(call.x().caller, &env.config().clients[1]);
  EXPECT_EQ(call.ctx().client_series, env.auth().client_series[1]);
}

TEST_F(AuthenticateTest, BearerKeyWorksLikeApiKey) {
  auto env = StageEnv::from_yaml(kTwoDeployments);
  auto& call = env.request("POST", kChatPath, {{"Authorization", "Bearer sk-app"}}, kChat);
  EXPECT_FALSE(call.run(authenticate));
  EXPECT_EQ(call.ctx().client, "app");
  EXPECT_EQ(call.ctx().tenant, "none");
}

TEST_F(AuthenticateTest, AnonymousAllowedServesUnknownCallers) {
  auto env = StageEnv::from_yaml(std::string(kTwoDeployments) + "auth: {allow_anonymous: true}\n");
  auto& call = env.request("POST", kChatPath, {}, kChat);
  EXPECT_FALSE(call.run(authenticate));
  EXPECT_EQ(call.ctx().client, "anonymous");
  EXPECT_EQ(call.x().caller, nullptr);
  EXPECT_EQ(call.ctx().client_series, env.auth().anonymous_series);
}

using ClassifyTest = StageTest;

TEST_F(ClassifyTest, BadJsonIs400) {
  auto env = StageEnv::from_yaml(kTwoDeployments);
  auto reply = env.request("POST", kChatPath, {{"api-key", "sk-app"}}, "{not json").run(classify);
  EXPECT_EQ(status(reply), 400);
  EXPECT_EQ(error_code(reply), "invalid_request");
  EXPECT_EQ(error_message(reply), "the request body is not valid JSON");
  EXPECT_EQ(reply->reason, "bad_request");
}

TEST_F(ClassifyTest, AStreamWithoutIncludeUsageExpectsNoUsage) {
  auto env = StageEnv::from_yaml(kTwoDeployments);
  auto& call = env.request("POST", kChatPath, {{"api-key", "sk-app"}},
                           R"({"messages":[{"role":"user","content":"hi"}],"stream":true})");
  EXPECT_FALSE(call.run(classify));
  EXPECT_TRUE(call.ctx().call.stream);
  EXPECT_FALSE(call.ctx().call.include_usage);
  EXPECT_FALSE(call.ctx().usage_expected);
}

TEST_F(ClassifyTest, AStreamAskingForUsageExpectsIt) {
  auto env = StageEnv::from_yaml(kTwoDeployments);
  auto& call = env.request(
      "POST", kChatPath, {{"api-key", "sk-app"}},
      R"({"messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}})");
  EXPECT_FALSE(call.run(classify));
  EXPECT_TRUE(call.ctx().call.include_usage);
  EXPECT_TRUE(call.ctx().usage_expected);
}

TEST_F(ClassifyTest, AnAnswerExpectsUsageButAFileListDoesNot) {
  auto env = StageEnv::from_yaml(kTwoDeployments);
  auto& chat = env.request("POST", kChatPath, {{"api-key", "sk-app"}}, kChat);
  EXPECT_FALSE(chat.run(classify));
  EXPECT_TRUE(chat.ctx().usage_expected);
  auto& files = env.request("GET", "/openai/v1/files", {{"api-key", "sk-app"}});
  EXPECT_FALSE(files.run(classify));
  EXPECT_FALSE(files.ctx().usage_expected);
}

using ListModelsTest = StageTest;

TEST_F(ListModelsTest, ListsOnlyTheClientsDeployments) {
  auto env = StageEnv::from_yaml(kTwoDeployments);
  auto reply = env.request("GET", "/v1/models", {{"api-key", "sk-app"}}).run(list_models);
  ASSERT_EQ(status(reply), 200);
  auto j = nlohmann::json::parse(reply->body);
  ASSERT_EQ(j["data"].size(), 1u);
  EXPECT_EQ(j["data"][0]["id"], "gpt-4o");
  auto all = env.request("GET", "/v1/models", {{"api-key", "sk-other"}}).run(list_models);
  EXPECT_EQ(nlohmann::json::parse(all->body)["data"].size(), 2u);
}

TEST_F(ListModelsTest, WithoutTheModelsOperationIs403) {
  auto env = StageEnv::from_yaml(R"(
backends: [{name: east, endpoint: "http://127.0.0.1:1", deployment: gpt-4o, api_key: env:AOAI_KEY}]
deployments: [{name: gpt-4o, pools: [{backends: [east]}]}]
clients: [{name: app, keys: [env:APP_KEY], deployments: ["*"], operations: [chat]}]
)");
  auto reply = env.request("GET", "/v1/models", {{"api-key", "sk-app"}}).run(list_models);
  EXPECT_EQ(status(reply), 403);
  EXPECT_EQ(error_code(reply), "PermissionDenied");
  EXPECT_EQ(error_message(reply), "This client may not call the 'models' operation.");
}

TEST_F(ListModelsTest, OtherCallsGoOn) {
  auto env = StageEnv::from_yaml(kTwoDeployments);
  EXPECT_FALSE(env.request("POST", kChatPath, {{"api-key", "sk-app"}}, kChat).run(list_models));
}

using RouteTest = StageTest;

TEST_F(RouteTest, UnknownDeploymentInThePathIs404BeforeTheBody) {
  auto env = StageEnv::from_yaml(kTwoDeployments);
  auto& call =
      env.request("POST", "/openai/deployments/gpt-5/chat/completions?api-version=2024-10-21",
                  {{"api-key", "sk-app"}}, kChat);
  auto reply = call.run(authorize_target);
  EXPECT_EQ(status(reply), 404);
  EXPECT_EQ(error_code(reply), "DeploymentNotFound");
  EXPECT_EQ(reply->reason, "unknown_deployment");
  EXPECT_EQ(call.run_header()->status, 404) << "the header stages answer it";
}

TEST_F(RouteTest, UnknownModelInTheBodyIs404) {
  auto env = StageEnv::from_yaml(kTwoDeployments);
  auto& call = env.request("POST", "/v1/chat/completions", {{"api-key", "sk-other"}},
                           R"({"model":"gpt-5","messages":[{"role":"user","content":"hi"}]})");
  EXPECT_FALSE(call.run_header()) << "the deployment is not known before the body";
  auto reply = call.run(route);
  EXPECT_EQ(status(reply), 404);
  EXPECT_EQ(error_code(reply), "DeploymentNotFound");
}

TEST_F(RouteTest, TheModelInTheBodyPicksTheDeployment) {
  auto env = StageEnv::from_yaml(kTwoDeployments);
  auto& call = env.request("POST", "/v1/chat/completions", {{"api-key", "sk-other"}},
                           R"({"model":"mini","messages":[{"role":"user","content":"hi"}]})");
  EXPECT_FALSE(call.run(route));
  EXPECT_EQ(call.ctx().deployment, &env.config().deployments[1]);
  EXPECT_EQ(call.x().route, &env.snapshot().deployments[1]);
  EXPECT_EQ(call.ctx().series, env.snapshot().deployments[1].series_none);
}

TEST_F(RouteTest, AStatefulCallWithoutModelGoesToTheAffinityDeployment) {
  auto env = StageEnv::from_yaml(std::string(kTwoDeployments) +
                                 "routing: {affinity: {deployment: mini}}\n");
  auto& call = env.request("POST", "/openai/v1/files", {{"api-key", "sk-other"}});
  EXPECT_FALSE(call.run(route));
  ASSERT_NE(call.ctx().deployment, nullptr);
  EXPECT_EQ(call.ctx().deployment->name, "mini");
}

using AuthorizeTest = StageTest;

TEST_F(AuthorizeTest, AnotherDeploymentInThePathIs403BeforeTheBody) {
  auto env = StageEnv::from_yaml(kTwoDeployments);
  auto reply =
      env.request("POST", "/openai/deployments/mini/chat/completions?api-version=2024-10-21",
                  {{"api-key", "sk-app"}}, kChat)
          .run(authorize_target);
  EXPECT_EQ(status(reply), 403);
  EXPECT_EQ(error_message(reply), "This client may not use deployment 'mini'.");
  EXPECT_EQ(reply->reason, "forbidden");
}

TEST_F(AuthorizeTest, AnotherDeploymentInTheBodyIs403) {
  auto env = StageEnv::from_yaml(kTwoDeployments);
  auto& call = env.request("POST", "/openai/v1/chat/completions", {{"api-key", "sk-app"}},
                           R"({"model":"mini","messages":[{"role":"user","content":"hi"}]})");
  EXPECT_FALSE(call.run_header());
  auto reply = call.run(authorize);
  EXPECT_EQ(status(reply), 403);
  EXPECT_EQ(error_message(reply), "This client may not use deployment 'mini'.");
}

TEST_F(AuthorizeTest, AnonymousCallersPassTheHeaderStages) {
  auto env = StageEnv::from_yaml(R"(
backends: [{name: east, endpoint: "http://127.0.0.1:1", deployment: gpt-4o, api_key: env:AOAI_KEY}]
deployments: [{name: gpt-4o, pools: [{backends: [east]}]}]
auth: {allow_anonymous: true}
)");
  EXPECT_FALSE(env.request("POST", kChatPath, {}, kChat).run_header());
}

TEST_F(AuthorizeTest, AnotherOperationIs403) {
  auto env = StageEnv::from_yaml(R"(
backends: [{name: east, endpoint: "http://127.0.0.1:1", deployment: gpt-4o, api_key: env:AOAI_KEY}]
deployments: [{name: gpt-4o, pools: [{backends: [east]}]}]
clients: [{name: app, keys: [env:APP_KEY], deployments: ["*"], operations: [embeddings]}]
)");
  auto reply = env.request("POST", kChatPath, {{"api-key", "sk-app"}}, kChat).run(authorize_target);
  EXPECT_EQ(status(reply), 403);
  EXPECT_EQ(error_message(reply), "This client may not call the 'chat' operation.");
  auto v1 = env.request("POST", "/v1/chat/completions", {{"api-key", "sk-app"}}, kChat).run_header();
  EXPECT_EQ(status(v1), 403) << "the operation is known from the path on every surface";
}

TEST_F(AuthorizeTest, RegionsMaskTheBackends) {
  auto env = StageEnv::from_yaml(R"(
backends:
  - {name: east, endpoint: "http://127.0.0.1:1", deployment: gpt-4o, api_key: env:AOAI_KEY, region: eastus}
  - {name: west, endpoint: "http://127.0.0.1:2", deployment: gpt-4o, api_key: env:AOAI_KEY, region: westeurope}
deployments: [{name: gpt-4o, pools: [{backends: [east, west]}]}]
clients: [{name: eu, keys: [env:APP_KEY], deployments: ["*"], regions: [westeurope]}]
)");
  auto& call = env.request("POST", kChatPath, {{"api-key", "sk-app"}}, kChat);
  EXPECT_FALSE(call.run(authorize));
  EXPECT_FALSE(call.x().allowed.allows(0));  // east
  EXPECT_TRUE(call.x().allowed.allows(1));   // west
}

TEST_F(AuthorizeTest, NoBackendInTheClientsRegionsIs403) {
  auto env = StageEnv::from_yaml(R"(
backends: [{name: east, endpoint: "http://127.0.0.1:1", deployment: gpt-4o, api_key: env:AOAI_KEY, region: eastus}]
deployments: [{name: gpt-4o, pools: [{backends: [east]}]}]
clients: [{name: eu, keys: [env:APP_KEY], deployments: ["*"], regions: [westeurope]}]
)");
  auto reply = env.request("POST", kChatPath, {{"api-key", "sk-app"}}, kChat).run(authorize);
  EXPECT_EQ(status(reply), 403);
  EXPECT_EQ(error_message(reply),
            "No backend of deployment 'gpt-4o' is in a region this client may use.");
}

TEST_F(AuthorizeTest, AnonymousCallersMayUseEverything) {
  auto env = StageEnv::from_yaml(std::string(kTwoDeployments) + "auth: {allow_anonymous: true}\n");
  auto& call = env.request("POST", kChatPath, {}, kChat);
  EXPECT_FALSE(call.run(authorize));
  EXPECT_FALSE(call.x().allowed.restricted());
}

}  // namespace
}  // namespace tollgate::pipeline::testing

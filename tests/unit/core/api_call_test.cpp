#include <gtest/gtest.h>

#include "tollgate/core/api_call.hpp"

using namespace tollgate::core;

namespace {

tollgate::config::BackendConfig backend(std::string deployment, std::string base = "") {
  tollgate::config::BackendConfig b;
  b.name = "b";
  b.deployment = std::move(deployment);
  b.endpoint.base_path = std::move(base);
  return b;
}

constexpr std::string_view kJson = "application/json";
constexpr std::string_view kChat = R"({"messages":[{"role":"user","content":"hi"}],"model":"gpt-4o"})";

TEST(ApiCallTest, DeploymentSurfaceChat) {
  auto c = classify("POST", "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
                    kJson, kChat);
  ASSERT_FALSE(c.error);
  EXPECT_EQ(c.call.surface, Surface::kDeployment);
  EXPECT_EQ(c.call.op, Operation::kChatCompletions);
  EXPECT_EQ(c.call.deployment, "gpt-4o");
  EXPECT_EQ(c.call.api_version, "2024-10-21");
  EXPECT_FALSE(c.call.stream);
  EXPECT_EQ(upstream_target(c.call, backend("gpt-4o-prod", "/base")),
            "/base/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21");
  EXPECT_FALSE(rewrite_body(c.call, backend("gpt-4o-prod")));  // path routing: body untouched
}

TEST(ApiCallTest, PercentEncodedDeploymentNames) {
  auto c = classify("POST", "/openai/deployments/my%20dep/embeddings?api-version=2024-10-21", kJson,
                    R"({"input":"x"})");
  ASSERT_FALSE(c.error);
  EXPECT_EQ(c.call.deployment, "my dep");
  EXPECT_EQ(c.call.op, Operation::kEmbeddings);
  EXPECT_EQ(upstream_target(c.call, backend("other dep")),
            "/openai/deployments/other%20dep/embeddings?api-version=2024-10-21");
}

TEST(ApiCallTest, StreamFlagsAreRead) {
  auto c = classify("POST", "/openai/deployments/d/chat/completions?api-version=x", kJson,
                    R"({"messages":[{"role":"user","content":"hi"}],"stream":true,
                        "stream_options":{"include_usage":true}})");
  ASSERT_FALSE(c.error);
  EXPECT_TRUE(c.call.stream);
  EXPECT_TRUE(c.call.include_usage);
}

TEST(ApiCallTest, V1SurfacesRouteByModelAndRewriteIt) {
  for (auto target : {"/openai/v1/chat/completions", "/v1/chat/completions"}) {
    auto c = classify("POST", target, "application/json; charset=utf-8", kChat);
    ASSERT_FALSE(c.error) << target;
    EXPECT_EQ(c.call.deployment, "gpt-4o");
    EXPECT_TRUE(c.call.model_in_body);
    EXPECT_EQ(upstream_target(c.call, backend("prod")), "/openai/v1/chat/completions");
    auto body = rewrite_body(c.call, backend("prod"));
    ASSERT_TRUE(body);
    EXPECT_EQ(*body, R"({"messages":[{"role":"user","content":"hi"}],"model":"prod"})");
    EXPECT_FALSE(rewrite_body(c.call, backend("gpt-4o")));
  }
}

TEST(ApiCallTest, ModelsListIsAnsweredLocally) {
  auto c = classify("GET", "/v1/models", "", "");
  ASSERT_FALSE(c.error);
  EXPECT_EQ(c.call.op, Operation::kModels);
  EXPECT_EQ(classify("POST", "/openai/v1/models", "", "").error->status, 405);
}

TEST(ApiCallTest, Rejections) {
  auto status = [](std::string_view m, std::string_view t, std::string_view ct, std::string_view b) {
    auto c = classify(m, t, ct, b);
    return c.error ? c.error->status : 0;
  };
  EXPECT_EQ(status("POST", "/foo", kJson, kChat), 404);
  EXPECT_EQ(status("POST", "/openai/deployments//chat/completions", kJson, kChat), 404);
  EXPECT_EQ(status("GET", "/openai/deployments/d/chat/completions", "", ""), 405);
  EXPECT_EQ(status("POST", "/openai/deployments/d/chat/completions", kJson, "{not json"), 400);
  EXPECT_EQ(status("POST", "/openai/deployments/d/chat/completions", kJson, "[1,2]"), 400);
  EXPECT_EQ(status("POST", "/openai/deployments/d/chat/completions", kJson, "{}"), 400);
  EXPECT_EQ(status("POST", "/openai/deployments/d/chat/completions", kJson, R"({"messages":[]})"), 400);
  EXPECT_EQ(status("POST", "/openai/deployments/d/embeddings", kJson, R"({"model":"x"})"), 400);
  EXPECT_EQ(status("POST", "/openai/deployments/d/chat/completions", "text/plain", "hello"), 400);
  EXPECT_EQ(status("POST", "/v1/chat/completions", kJson, R"({"messages":[{"role":"user"}]})"), 400);
  EXPECT_EQ(status("POST", "/openai/deployments/d/chat/completions", kJson, ""), 400);
  auto c = classify("POST", "/v1/chat/completions", kJson, R"({"messages":[{"role":"user"}]})");
  EXPECT_EQ(c.error->param, "model");
  EXPECT_NE(c.error->body().find(R"("code":"invalid_request")"), std::string::npos);
}

TEST(ApiCallTest, OtherAzurePathsNeedAModelADeploymentOrAStatefulApi) {
  auto c = classify("GET", "/openai/deployments/d/extensions/x?api-version=1", "", "");
  ASSERT_FALSE(c.error);
  EXPECT_EQ(c.call.op, Operation::kOther);
  EXPECT_EQ(upstream_target(c.call, backend("real")), "/openai/deployments/real/extensions/x?api-version=1");
  auto r = classify("POST", "/openai/responses?api-version=2025-04-01-preview", kJson,
                    R"({"model":"gpt-4o","input":"hi"})");
  ASSERT_FALSE(r.error);
  EXPECT_EQ(r.call.op, Operation::kResponses);
  EXPECT_EQ(r.call.deployment, "gpt-4o");
  EXPECT_EQ(upstream_target(r.call, backend("prod")), "/openai/responses?api-version=2025-04-01-preview");
  EXPECT_EQ(classify("GET", "/openai/batchez", "", "").error->status, 404);
  // Stateful APIs route by affinity, so they need no model.
  auto f = classify("GET", "/openai/files/file-abc?api-version=2024-10-21", "", "");
  ASSERT_FALSE(f.error);
  EXPECT_TRUE(f.call.stateful);
  EXPECT_TRUE(f.call.deployment.empty());
  auto g = classify("GET", "/openai/v1/responses/resp_1", "", "");
  ASSERT_FALSE(g.error);
  EXPECT_TRUE(g.call.stateful);
  EXPECT_EQ(classify("POST", "/openai/v1/responses", kJson, R"({"input":"hi"})").error->status, 400);
  EXPECT_FALSE(classify("POST", "/openai/deployments/d/chat/completions?api-version=1", kJson,
                        R"({"messages":[{"role":"user","content":"x"}]})")
                   .call.stateful);
}

TEST(ApiCallTest, ErrorBodiesAreOpenAIShaped) {
  HttpError e{404, "DeploymentNotFound", "no \"such\"\n", {}, {}};
  EXPECT_EQ(e.body(),
            R"({"error":{"code":"DeploymentNotFound","message":"no \"such\"\n","type":"not_found_error","param":null}})");
  EXPECT_EQ(json_quote("a\xff" "b\x01"), "\"a\xEF\xBF\xBD" "b\\u0001\"");
}

}  // namespace

namespace {

constexpr std::string_view kChatPath = "/openai/deployments/d/chat/completions?api-version=2024-10-21";

TEST(ApiCallBodyTest, ReadMembersGivenTwiceAre400DuplicateKey) {
  auto c = classify("POST", kChatPath, kJson,
                    R"({"messages":[{"role":"user","content":"hi"}],"max_tokens":1,"max_tokens":9})");
  ASSERT_TRUE(c.error);
  EXPECT_EQ(c.error->status, 400);
  EXPECT_EQ(c.error->code, "duplicate_key");
  EXPECT_EQ(c.error->param, "max_tokens");
}

TEST(ApiCallBodyTest, DepthComesFromTheOptions) {
  std::string_view body = R"({"messages":[{"role":"user","content":"hi","x":[1]}]})";  // depth 4
  EXPECT_FALSE(classify("POST", kChatPath, kJson, body, ClassifyOptions{ScanLimits{4}}).error);
  auto c = classify("POST", kChatPath, kJson, body, ClassifyOptions{ScanLimits{3}});
  ASSERT_TRUE(c.error);
  EXPECT_EQ(c.error->status, 400);
  EXPECT_NE(c.error->message.find("deeper than 3 levels (server.limits.max_json_depth)"),
            std::string::npos);
}

TEST(ApiCallBodyTest, ValidJsonNlohmannRefusesIsAcceptedAndItsDomIsSanitized) {
  std::string body = R"({"messages":[{"role":"user","content":"a\ud800b"}],"x":)" +
                     std::string(5000, '9') + "}";
  auto c = classify("POST", kChatPath, kJson, body);
  ASSERT_FALSE(c.error);
  auto dom = body_dom(c.call);
  ASSERT_TRUE(dom);
  EXPECT_EQ((*dom)["messages"][0]["content"], "a\xEF\xBF\xBD" "b");
  EXPECT_EQ((*dom)["x"], 0);
}

TEST(ApiCallBodyTest, TheModelRewriteIsSplicedAndKeepsEveryOtherByte) {
  std::string_view body =
      R"({ "model" :"gpt-4o" , "messages":[{"role":"user","content":"\udfff"}], "n" : 1.0E0 })";
  auto c = classify("POST", "/v1/chat/completions", kJson, body);
  ASSERT_FALSE(c.error);
  auto out = rewrite_body(c.call, backend("prod \"1\""));
  ASSERT_TRUE(out);
  EXPECT_EQ(*out,
            R"({ "model" :"prod \"1\"" , "messages":[{"role":"user","content":"\udfff"}], "n" : 1.0E0 })");
  // Edits of the gateway and the rewrite, in one pass.
  c.call.edits.replace((*c.call.fields)[BodyField::kMessages].span, "[]");
  EXPECT_EQ(*rewrite_body(c.call, backend("p")), R"({ "model" :"p" , "messages":[], "n" : 1.0E0 })");
  EXPECT_EQ(*rewrite_body(c.call, backend("gpt-4o")), R"({ "model" :"gpt-4o" , "messages":[], "n" : 1.0E0 })");
}

}  // namespace

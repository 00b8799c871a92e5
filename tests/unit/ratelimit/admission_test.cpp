// Admission estimates and policy: exact prompt tokens, output allowance capped, clamped,
// defaulted and multiplied by n / best_of.
#include "tollgate/ratelimit/admission.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace tollgate::ratelimit {
namespace {

const tokenize::Tokenizers& tokenizers() {
  static auto t = [] {
    auto r = tokenize::Tokenizers::load(TOLLGATE_TOKENIZER_DIR);
    if (!r) throw std::runtime_error(r.error().message);
    return std::move(r).value();
  }();
  return t;
}

// The body the backend receives after admission's edits.
nlohmann::json edited(const core::ApiCall& call) {
  return nlohmann::json::parse(call.edits.apply(call.body));
}

// The call keeps a view of its body: the bodies here are literals.
core::ApiCall chat(std::string_view body) {
  auto c = core::classify("POST", "/openai/deployments/d/chat/completions?api-version=2024-10-21",
                          "application/json", body);
  return c.call;
}

TEST(Admission, PromptIsExactAndAllowanceIsMaxTokensTimesN) {
  auto call = chat(R"({"messages":[{"role":"user","content":"hello world"}],"max_tokens":100,"n":3})");
  config::PolicyConfig policy;
  auto e = admit(call, 80, nullptr, policy, tokenizers(), "gpt-4o");
  ASSERT_FALSE(e.error);
  EXPECT_EQ(e.prompt, 9);  // 3 + (1 role + 2 content) + 3
  EXPECT_EQ(e.allowance, 300);
  EXPECT_TRUE(e.exact);
  EXPECT_TRUE(call.edits.empty());
}

TEST(Admission, ClientCapClampsOrRejectsAndDefaultFillsIn) {
  config::ClientConfig client;
  client.limits.max_tokens_cap = 50;
  client.limits.default_max_tokens = 20;
  config::PolicyConfig policy;
  auto call = chat(R"({"messages":[{"role":"user","content":"x"}],"max_completion_tokens":400})");
  auto e = admit(call, 60, &client, policy, tokenizers(), "gpt-4o");
  EXPECT_EQ(e.allowance, 50);
  EXPECT_FALSE(call.edits.empty());
  EXPECT_EQ(edited(call)["max_completion_tokens"], 50);
  policy.reject_over_cap = true;
  call = chat(R"({"messages":[{"role":"user","content":"x"}],"max_tokens":400})");
  e = admit(call, 60, &client, policy, tokenizers(), "gpt-4o");
  ASSERT_TRUE(e.error);
  EXPECT_EQ(e.error->status, 400);
  EXPECT_NE(e.error->message.find("exceeds this client's limit of 50"), std::string::npos);
  call = chat(R"({"messages":[{"role":"user","content":"x"}]})");
  e = admit(call, 60, &client, policy, tokenizers(), "gpt-4o");
  EXPECT_EQ(e.allowance, 20);
  EXPECT_EQ(edited(call)["max_completion_tokens"], 20);  // api-version 2024-10-21 knows it
}

TEST(Admission, PolicyLimitsNAndBestOf) {
  config::PolicyConfig policy;
  policy.max_n = 2;
  auto call = chat(R"({"messages":[{"role":"user","content":"x"}],"n":3})");
  auto e = admit(call, 60, nullptr, policy, tokenizers(), "gpt-4o");
  ASSERT_TRUE(e.error);
  EXPECT_EQ(e.error->param, "n");
  call = chat(R"({"messages":[{"role":"user","content":"x"}],"n":2})");
  e = admit(call, 60, nullptr, policy, tokenizers(), "gpt-4o");
  EXPECT_FALSE(e.error);
  EXPECT_EQ(e.allowance, 2 * kDefaultAllowance);  // nothing asked: the default allowance
  EXPECT_FALSE(e.exact);
}

TEST(Admission, EmbeddingsHaveNoAllowance) {
  auto c = core::classify("POST", "/openai/deployments/e/embeddings?api-version=2024-10-21",
                          "application/json", R"({"input":["hello world","x"]})");
  config::PolicyConfig policy;
  auto e = admit(c.call, 40, nullptr, policy, tokenizers(), "text-embedding-3-small");
  EXPECT_EQ(e.allowance, 0);
  EXPECT_EQ(e.prompt, 3);
  EXPECT_EQ(count_output(tokenizers(), "gpt-4o", "This is a mock reply"), 5);
}

}  // namespace
}  // namespace tollgate::ratelimit

// Admission estimates and policy: exact prompt tokens, output allowance capped, clamped,
// defaulted and multiplied by n / best_of.
#include "tollgate/ratelimit/admission.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tollgate/tokenize/count_cache.hpp"
#include "tollgate/tokenize/estimate.hpp"

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

// Issue 14: chat prompts counted from the body's bytes (plain messages) and from the count
// cache agree exactly with the DOM count of estimate_chat_prompt, whatever the message shape.
TEST(Admission, PlainAndMemoizedMessageCountsEqualTheDomCount) {
  static auto cached = [] {
    auto r = tokenize::Tokenizers::load(TOLLGATE_TOKENIZER_DIR);
    if (!r) throw std::runtime_error(r.error().message);
    auto t = std::move(r).value();
    t.set_count_cache(1 << 20);
    return t;
  }();
  const std::string system = R"({"role":"system","content":"You are a careful assistant. Answer in full sentences, cite sources."})";
  for (std::string body : {
           R"({"messages":[)" + system + R"(,{"role":"user","content":"hi"}]})",
           R"({"messages":[)" + system + R"(,{"role":"user","name":"ana","content":"with a name and \"escapes\" \u00e9\n"}]})",
           R"({"messages":[)" + system + R"(,{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c1","content":"42 degrees and sunny in the city today"}]})",
           R"({"messages":[)" + system + R"(,{"role":"user","content":[{"type":"text","text":"parts, not a string: counted through a DOM"}]}]})",
           R"({"messages":[)" + system + R"(,{"role":"user","content":"first","content":"a duplicate key: the last one wins in a DOM"}]})",
           R"({"messages":[)" + system + R"(,{"r\u006fle":"user","content":"an escaped key is not a plain message"}]})",
       }) {
    auto call = chat(body);
    auto dom = tokenize::estimate_chat_prompt(tokenizers().for_model("gpt-4o"), nlohmann::ordered_json::parse(body), "gpt-4o");
    ASSERT_TRUE(dom) << body;
    EXPECT_EQ(prompt_tokens(call, body.size(), tokenizers(), "gpt-4o"), static_cast<std::int64_t>(dom->tokens)) << body;
    for (int round = 0; round < 2; ++round) {  // a miss, then a hit
      EXPECT_EQ(prompt_tokens(call, body.size(), cached, "gpt-4o"), static_cast<std::int64_t>(dom->tokens)) << body;
    }
  }
  EXPECT_GT(cached.count_cache()->stats().hits, 5u) << "the system prompt repeats";
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

TEST(Admission, TheChatPromptCountedPerMessageEqualsTheWholeBodyCount) {
  std::string_view body = R"({"model":"gpt-4o","messages":[{"role":"system","content":"Be brief."},
      {"role":"user","name":"ann","content":"What is 2+2?"},
      {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function",
        "function":{"name":"add","arguments":"{\"a\":2}"}}]},
      {"role":"tool","tool_call_id":"c1","content":"4"}],
    "tools":[{"type":"function","function":{"name":"add","description":"Adds",
      "parameters":{"type":"object","properties":{"a":{"type":"number","description":"x"}}}}}],
    "response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"type":"object"}}}})";
  auto call = chat(body);
  config::PolicyConfig policy;
  auto e = admit(call, body.size(), nullptr, policy, tokenizers(), "gpt-4o");
  ASSERT_FALSE(e.error);
  const auto& enc = tokenizers().for_model("gpt-4o");
  auto whole = tokenize::estimate_chat_prompt(enc, nlohmann::ordered_json::parse(body), "gpt-4o");
  ASSERT_TRUE(whole);
  EXPECT_EQ(e.prompt, static_cast<std::int64_t>(whole->tokens));
  EXPECT_FALSE(e.exact);  // tool calls: an estimate, as before
}

TEST(Admission, ALoneSurrogateIsCountedNotRefused) {
  auto call = chat(R"({"messages":[{"role":"user","content":"\ud800"}],"max_tokens":1})");
  config::PolicyConfig policy;
  auto e = admit(call, 60, nullptr, policy, tokenizers(), "gpt-4o");
  ASSERT_FALSE(e.error);
  EXPECT_TRUE(e.exact);
  EXPECT_EQ(e.prompt, 3 + 1 + 1 + 3);  // the U+FFFD counted in its place: one token
}

TEST(Admission, AnAbsurdMaxTokensIsClampedNotWrapped) {
  config::ClientConfig client;
  client.limits.max_tokens_cap = 50;
  config::PolicyConfig policy;
  auto call = chat(R"({"messages":[{"role":"user","content":"x"}],"max_tokens": 18446744073709551615 })");
  auto e = admit(call, 60, &client, policy, tokenizers(), "gpt-4o");
  ASSERT_FALSE(e.error);
  EXPECT_EQ(e.allowance, 50);
  EXPECT_EQ(call.edits.apply(call.body), R"({"messages":[{"role":"user","content":"x"}],"max_tokens": 50 })");
}

}  // namespace
}  // namespace tollgate::ratelimit

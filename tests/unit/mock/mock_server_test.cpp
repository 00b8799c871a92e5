// Component tests: the mock runs in-process on 127.0.0.1:0 and is driven over real sockets.

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "mock/server.hpp"
#include "mock/wire.hpp"
#include "mock_client.hpp"

namespace tollgate::mock {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using test::Client;
using test::Request;
using test::Response;

constexpr const char* kChatPath =
    "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21";

Options base_options() {
  Options o;
  o.listen_host = "127.0.0.1";
  o.listen_port = 0;
  o.pace = 1ms;
  return o;
}

class MockServerTest : public ::testing::Test {
 protected:
  void start(Options o = base_options()) {
    server_ = std::make_unique<MockServer>(std::move(o));
    server_->start();
  }
  void TearDown() override {
    if (server_) server_->stop();
  }
  std::uint16_t port() const { return server_->port(); }

  Response post(const std::string& target, const std::string& body,
                std::vector<std::pair<std::string, std::string>> headers = {}) {
    return test::request(port(), Request{"POST", target, std::move(headers), body});
  }
  Response get(const std::string& target) {
    return test::request(port(), Request{"GET", target, {}, ""});
  }
  Response del(const std::string& target) {
    return test::request(port(), Request{"DELETE", target, {}, ""});
  }
  json stats() { return json::parse(get("/_mock/stats").body); }

  // Polls `pred` until it holds or `limit` passes.
  static bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds limit = 3s) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      if (pred()) return true;
      std::this_thread::sleep_for(5ms);
    }
    return pred();
  }

  std::unique_ptr<MockServer> server_;
};

const std::string kHello = R"({"messages":[{"role":"user","content":"Hello there"}]})";

bool is_uuid(const std::string& s) {
  static const std::regex re(
      "^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$");
  return std::regex_match(s, re);
}

TEST_F(MockServerTest, ChatNonStreamHasAzureShapeAndHeaders) {
  start();
  Response r = post(kChatPath, kHello, {{"x-ms-client-request-id", "client-id-1"}});
  ASSERT_EQ(r.status, 200) << r.error << r.body;
  EXPECT_EQ(r.header("content-type"), "application/json");
  EXPECT_TRUE(is_uuid(r.header("apim-request-id")));
  EXPECT_TRUE(is_uuid(r.header("x-request-id")));
  EXPECT_EQ(r.header("x-ms-client-request-id"), "client-id-1");
  EXPECT_EQ(r.header("x-ms-region"), "East US");
  EXPECT_EQ(r.header("x-ms-deployment-name"), "gpt-4o");
  EXPECT_FALSE(r.header("azureml-model-session").empty());
  EXPECT_EQ(r.header("x-content-type-options"), "nosniff");
  EXPECT_FALSE(r.header("x-ratelimit-remaining-requests").empty());
  EXPECT_FALSE(r.header("x-ratelimit-remaining-tokens").empty());
  EXPECT_FALSE(r.header("x-ratelimit-limit-requests").empty());
  EXPECT_FALSE(r.header("x-ratelimit-limit-tokens").empty());
  EXPECT_EQ(r.header("x-mock-instance"), "mock");

  json j = json::parse(r.body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_TRUE(j["id"].get<std::string>().starts_with("chatcmpl-mock-"));
  EXPECT_GT(j["created"].get<std::int64_t>(), 1'700'000'000);
  EXPECT_EQ(j["model"], "gpt-4o-2024-11-20");
  EXPECT_TRUE(j["system_fingerprint"].get<std::string>().starts_with("fp_"));
  ASSERT_EQ(j["choices"].size(), 1u);
  const json& c = j["choices"][0];
  EXPECT_EQ(c["index"], 0);
  EXPECT_EQ(c["finish_reason"], "stop");
  EXPECT_TRUE(c["logprobs"].is_null());
  EXPECT_EQ(c["message"]["role"], "assistant");
  EXPECT_EQ(c["message"]["content"], completion_text(10));
  EXPECT_TRUE(c["message"]["refusal"].is_null());
  EXPECT_EQ(c["content_filter_results"]["hate"]["severity"], "safe");
  EXPECT_EQ(j["prompt_filter_results"][0]["prompt_index"], 0);
  EXPECT_FALSE(j["prompt_filter_results"][0]["content_filter_results"]["jailbreak"]["detected"]);
  // "Hello there" = 11 chars -> 3 tokens, + 3 per message + 3.
  EXPECT_EQ(j["usage"]["prompt_tokens"], 9);
  EXPECT_EQ(j["usage"]["completion_tokens"], 10);
  EXPECT_EQ(j["usage"]["total_tokens"], 19);
  EXPECT_EQ(j["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
  EXPECT_EQ(j["usage"]["completion_tokens_details"]["reasoning_tokens"], 0);
}

TEST_F(MockServerTest, ChatHonoursNAndMaxTokens) {
  start();
  Response r =
      post(kChatPath,
           R"({"messages":[{"role":"user","content":"hi"}],"n":3,"max_completion_tokens":4})");
  ASSERT_EQ(r.status, 200) << r.body;
  json j = json::parse(r.body);
  ASSERT_EQ(j["choices"].size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(j["choices"][i]["index"], i);
    EXPECT_EQ(j["choices"][i]["finish_reason"], "length");
    EXPECT_EQ(j["choices"][i]["message"]["content"], completion_text(4));
  }
  EXPECT_EQ(j["usage"]["completion_tokens"], 12);
}

TEST_F(MockServerTest, ChatStreamFramingIsExactWithUsageChunk) {
  Options o = base_options();
  o.chunks = 3;
  start(o);
  Response r =
      post(kChatPath, R"({"messages":[{"role":"user","content":"Hello there"}],"stream":true,
                                   "stream_options":{"include_usage":true}})");
  ASSERT_EQ(r.status, 200) << r.error;
  ASSERT_TRUE(r.complete) << r.error;
  EXPECT_EQ(r.header("content-type"), "text/event-stream; charset=utf-8");
  EXPECT_EQ(r.header("transfer-encoding"), "chunked");
  // Every SSE event arrives as its own HTTP chunk.
  auto events = test::sse_events(r.body);
  ASSERT_EQ(events.size(), 8u) << r.body;
  ASSERT_EQ(r.chunks.size(), 8u);
  for (std::size_t i = 0; i < events.size(); ++i) EXPECT_EQ(r.chunks[i], events[i] + "\n\n") << i;
  EXPECT_EQ(events[7], "data: [DONE]");

  std::vector<json> e;
  for (std::size_t i = 0; i < 7; ++i) {
    ASSERT_TRUE(events[i].starts_with("data: ")) << events[i];
    e.push_back(json::parse(events[i].substr(6)));
  }
  // 1. prompt filter chunk
  EXPECT_EQ(e[0]["id"], "");
  EXPECT_EQ(e[0]["model"], "");
  EXPECT_EQ(e[0]["object"], "");
  EXPECT_EQ(e[0]["created"], 0);
  EXPECT_TRUE(e[0]["choices"].empty());
  EXPECT_TRUE(e[0]["prompt_filter_results"].is_array());
  // 2. role chunk
  EXPECT_EQ(e[1]["object"], "chat.completion.chunk");
  EXPECT_EQ(e[1]["model"], "gpt-4o-2024-11-20");
  EXPECT_EQ(e[1]["choices"][0]["delta"],
            json::parse(R"({"role":"assistant","content":"","refusal":null})"));
  EXPECT_EQ(e[1]["choices"][0]["content_filter_results"], json::object());
  EXPECT_TRUE(e[1]["choices"][0]["finish_reason"].is_null());
  // 3. content chunks
  std::string text;
  for (int i = 2; i <= 4; ++i) {
    EXPECT_EQ(e[i]["id"], e[1]["id"]);
    EXPECT_TRUE(e[i]["choices"][0]["content_filter_results"].contains("violence"));
    text += e[i]["choices"][0]["delta"]["content"].get<std::string>();
  }
  EXPECT_EQ(text, completion_text(3));
  // 4. finish chunk
  EXPECT_EQ(e[5]["choices"][0]["delta"], json::object());
  EXPECT_EQ(e[5]["choices"][0]["finish_reason"], "stop");
  // usage:null everywhere but the usage chunk
  for (int i = 0; i <= 5; ++i) {
    ASSERT_TRUE(e[i].contains("usage")) << i;
    EXPECT_TRUE(e[i]["usage"].is_null()) << i;
  }
  // 5. usage chunk
  EXPECT_TRUE(e[6]["choices"].empty());
  EXPECT_EQ(e[6]["usage"]["prompt_tokens"], 9);
  EXPECT_EQ(e[6]["usage"]["completion_tokens"], 3);
  EXPECT_EQ(e[6]["usage"]["total_tokens"], 12);

  json s = stats();
  EXPECT_EQ(s["streams_started"], 1);
  EXPECT_EQ(s["streams_completed"], 1);
  EXPECT_EQ(s["streams_aborted"], 0);
}

TEST_F(MockServerTest, ChatStreamWithoutUsageHasNoUsageKey) {
  Options o = base_options();
  o.chunks = 2;
  start(o);
  Response r = post(kChatPath, R"({"messages":[{"role":"user","content":"x"}],"stream":true})");
  ASSERT_TRUE(r.complete) << r.error;
  auto events = test::sse_events(r.body);
  ASSERT_EQ(events.size(), 6u);  // filter, role, 2 content, finish, DONE
  for (std::size_t i = 0; i + 1 < events.size(); ++i) {
    EXPECT_FALSE(json::parse(events[i].substr(6)).contains("usage")) << i;
  }
}

TEST_F(MockServerTest, ToolChoiceRequiredYieldsToolCalls) {
  Options o = base_options();
  o.chunks = 3;
  start(o);
  const std::string body = R"({"messages":[{"role":"user","content":"x"}],
      "tools":[{"type":"function","function":{"name":"get_weather","parameters":{}}}],
      "tool_choice":"required")";
  Response r = post(kChatPath, body + "}");
  ASSERT_EQ(r.status, 200) << r.body;
  json j = json::parse(r.body);
  const json& m = j["choices"][0]["message"];
  EXPECT_EQ(j["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_TRUE(m["content"].is_null());
  ASSERT_EQ(m["tool_calls"].size(), 1u);
  EXPECT_EQ(m["tool_calls"][0]["type"], "function");
  EXPECT_EQ(m["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_TRUE(m["tool_calls"][0]["id"].get<std::string>().starts_with("call_"));
  json args = json::parse(m["tool_calls"][0]["function"]["arguments"].get<std::string>());
  EXPECT_EQ(args["text"], completion_text(3));
  EXPECT_EQ(j["usage"]["completion_tokens"], 3);

  Response s = post(kChatPath, body + R"(,"stream":true})");
  ASSERT_TRUE(s.complete) << s.error;
  auto events = test::sse_events(s.body);
  ASSERT_EQ(events.size(), 7u);  // filter, role(+call), 3 argument fragments, finish, DONE
  json role = json::parse(events[1].substr(6))["choices"][0]["delta"];
  EXPECT_EQ(role["tool_calls"][0]["index"], 0);
  EXPECT_EQ(role["tool_calls"][0]["function"]["name"], "get_weather");
  std::string streamed;
  for (int i = 2; i <= 4; ++i) {
    json d = json::parse(events[i].substr(6))["choices"][0]["delta"];
    EXPECT_EQ(d["tool_calls"][0]["index"], 0);
    streamed += d["tool_calls"][0]["function"]["arguments"].get<std::string>();
  }
  EXPECT_EQ(streamed, m["tool_calls"][0]["function"]["arguments"].get<std::string>());
  EXPECT_EQ(json::parse(events[5].substr(6))["choices"][0]["finish_reason"], "tool_calls");

  // "auto" (or no tool_choice) answers with text: the mock stays deterministic.
  Response a = post(kChatPath, R"({"messages":[{"role":"user","content":"x"}],
      "tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"auto"})");
  EXPECT_EQ(json::parse(a.body)["choices"][0]["finish_reason"], "stop");
  Response named = post(kChatPath, R"({"messages":[{"role":"user","content":"x"}],
      "tools":[{"type":"function","function":{"name":"f"}},
               {"type":"function","function":{"name":"g"}}],
      "tool_choice":{"type":"function","function":{"name":"g"}}})");
  EXPECT_EQ(json::parse(named.body)["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
            "g");
}

TEST_F(MockServerTest, CompletionsStreamAndNonStream) {
  Options o = base_options();
  o.chunks = 2;
  start(o);
  const std::string path = "/openai/deployments/davinci/completions?api-version=2024-10-21";
  Response r = post(path, R"({"prompt":"abcdefgh","max_tokens":5})");
  ASSERT_EQ(r.status, 200) << r.body;
  json j = json::parse(r.body);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["choices"][0]["text"], completion_text(2));
  EXPECT_EQ(j["usage"]["prompt_tokens"], 2);
  Response s =
      post(path, R"({"prompt":"abcdefgh","stream":true,"stream_options":{"include_usage":true}})");
  ASSERT_TRUE(s.complete) << s.error;
  auto events = test::sse_events(s.body);
  ASSERT_EQ(events.size(), 6u);  // filter, 2 content, finish, usage, DONE
  EXPECT_EQ(json::parse(events[1].substr(6))["object"], "text_completion");
  EXPECT_EQ(json::parse(events[3].substr(6))["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(json::parse(events[4].substr(6))["usage"]["completion_tokens"], 2);
}

TEST_F(MockServerTest, EmbeddingsBase64DecodesToTheFloatVector) {
  start();
  const std::string path = "/openai/deployments/emb/embeddings?api-version=2024-10-21";
  Response f = post(path, R"({"input":["first","second input"],"dimensions":16})");
  Response b = post(
      path, R"({"input":["first","second input"],"dimensions":16,"encoding_format":"base64"})");
  ASSERT_EQ(f.status, 200) << f.body;
  ASSERT_EQ(b.status, 200) << b.body;
  json jf = json::parse(f.body);
  json jb = json::parse(b.body);
  EXPECT_EQ(jf["object"], "list");
  EXPECT_EQ(jf["model"], "text-embedding-3-small");
  EXPECT_EQ(jf["usage"]["prompt_tokens"], 5);  // ceil(5/4) + ceil(12/4)
  EXPECT_EQ(jf["usage"]["total_tokens"], 5);
  ASSERT_EQ(jb["data"].size(), 2u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(jb["data"][i]["object"], "embedding");
    EXPECT_EQ(jb["data"][i]["index"], i);
    std::string raw = test::base64_decode(jb["data"][i]["embedding"].get<std::string>());
    ASSERT_EQ(raw.size(), 16u * 4u);
    const json& floats = jf["data"][i]["embedding"];
    ASSERT_EQ(floats.size(), 16u);
    double norm = 0;
    for (std::size_t k = 0; k < 16; ++k) {
      float v;
      std::memcpy(&v, raw.data() + k * 4, 4);  // float32 little-endian (x86)
      EXPECT_EQ(v, floats[k].get<float>()) << k;
      norm += double{v} * v;
    }
    EXPECT_NEAR(norm, 1.0, 1e-5);
  }
  Response tokens = post(path, R"({"input":[[1,2,3],[4]]})");
  ASSERT_EQ(tokens.status, 200) << tokens.body;
  json jt = json::parse(tokens.body);
  EXPECT_EQ(jt["data"].size(), 2u);
  EXPECT_EQ(jt["data"][0]["embedding"].size(), 8u);  // default dimensions
  EXPECT_EQ(jt["usage"]["prompt_tokens"], 4);
}

TEST_F(MockServerTest, NotFoundShapes) {
  Options o = base_options();
  o.deployments = {parse_deployment("gpt-4o"), parse_deployment("my dep=gpt-4o-mini-2024-07-18"),
                   parse_deployment("text-embedding-3-small")};
  start(o);
  const json resource_not_found =
      json::parse(R"({"error":{"code":"404","message":"Resource not found"}})");
  Response unknown = post("/openai/nope?api-version=2024-10-21", kHello);
  EXPECT_EQ(unknown.status, 404);
  EXPECT_EQ(json::parse(unknown.body), resource_not_found);
  Response no_version = post("/openai/deployments/gpt-4o/chat/completions", kHello);
  EXPECT_EQ(no_version.status, 404);
  EXPECT_EQ(json::parse(no_version.body), resource_not_found);
  Response root = get("/");
  EXPECT_EQ(root.status, 404);
  Response dep = post("/openai/deployments/gpt-35/chat/completions?api-version=2024-10-21", kHello);
  EXPECT_EQ(dep.status, 404);
  EXPECT_EQ(json::parse(dep.body)["error"]["code"], "DeploymentNotFound");
  Response encoded =
      post("/openai/deployments/my%20dep/chat/completions?api-version=2024-10-21", kHello);
  ASSERT_EQ(encoded.status, 200) << encoded.body;
  EXPECT_EQ(json::parse(encoded.body)["model"], "gpt-4o-mini-2024-07-18");
  EXPECT_EQ(encoded.header("x-ms-deployment-name"), "my dep");
  Response v1 = post("/openai/v1/chat/completions",
                     R"({"model":"gpt-35","messages":[{"role":"user","content":"x"}]})");
  EXPECT_EQ(v1.status, 404);
  EXPECT_EQ(json::parse(v1.body)["error"]["code"], "DeploymentNotFound");
  Response v1ok = post("/openai/v1/chat/completions",
                       R"({"model":"gpt-4o","messages":[{"role":"user","content":"x"}]})");
  EXPECT_EQ(v1ok.status, 200) << v1ok.body;
  Response wrong_op = post(
      "/openai/deployments/text-embedding-3-small/chat/completions?api-version=2024-10-21", kHello);
  EXPECT_EQ(wrong_op.status, 400);
  EXPECT_EQ(json::parse(wrong_op.body)["error"]["code"], "OperationNotSupported");
}

TEST_F(MockServerTest, WrongMethodIs405AndBadJsonIs400) {
  start();
  Response m = get(kChatPath);
  EXPECT_EQ(m.status, 405);
  EXPECT_EQ(m.header("allow"), "POST");
  EXPECT_TRUE(json::parse(m.body).contains("error"));
  for (const std::string& body :
       {std::string("{not json"), std::string(5000, '['), std::string("\xff\xfe\x00", 3),
        std::string("{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}")}) {
    Response r = post(kChatPath, body);
    EXPECT_TRUE(r.status == 400 || r.status == 200) << r.status;
    EXPECT_TRUE(json::accept(r.body)) << r.body;
  }
  Response bad = post(kChatPath, "{not json");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(json::parse(bad.body)["error"]["type"], "invalid_request_error");
  // The server is still fine.
  EXPECT_EQ(post(kChatPath, kHello).status, 200);
}

TEST_F(MockServerTest, ApiKeyIsRequiredWhenConfigured) {
  Options o = base_options();
  o.api_key = "secret";
  start(o);
  Response none = post(kChatPath, kHello);
  EXPECT_EQ(none.status, 401);
  EXPECT_EQ(json::parse(none.body)["error"]["code"], "401");
  Response wrong_key = post(kChatPath, kHello, {{"api-key", "nope"}});
  EXPECT_EQ(wrong_key.status, 401);
  Response wrong_bearer = post(kChatPath, kHello, {{"Authorization", "Bearer nope"}});
  EXPECT_EQ(wrong_bearer.status, 401);
  EXPECT_EQ(json::parse(wrong_bearer.body)["statusCode"], 401);
  EXPECT_EQ(post(kChatPath, kHello, {{"api-key", "secret"}}).status, 200);
  EXPECT_EQ(post(kChatPath, kHello, {{"Authorization", "Bearer secret"}}).status, 200);
  // python <= 2.33 sends both; api-key decides.
  EXPECT_EQ(
      post(kChatPath, kHello, {{"api-key", "secret"}, {"Authorization", "Bearer secret"}}).status,
      200);
  // Control paths need no key.
  EXPECT_EQ(get("/_mock/stats").status, 200);
}

TEST_F(MockServerTest, QueuedFault429CarriesHeadersAndIsConsumed) {
  start();
  Response add =
      post("/_mock/faults",
           R"({"status":429,"headers":{"retry-after-ms":"1500","retry-after":"2"},"count":2})");
  ASSERT_EQ(add.status, 200) << add.body;
  EXPECT_EQ(json::parse(add.body)["pending"], 1);
  for (int i = 0; i < 2; ++i) {
    Response r = post(kChatPath, kHello);
    ASSERT_EQ(r.status, 429) << i;
    EXPECT_EQ(r.header("retry-after-ms"), "1500");
    EXPECT_EQ(r.header("retry-after"), "2");
    EXPECT_FALSE(r.header("apim-request-id").empty());
    json j = json::parse(r.body);
    EXPECT_EQ(j["error"]["code"], "429");
    EXPECT_NE(j["error"]["message"].get<std::string>().find("Please retry after 2 seconds"),
              std::string::npos);
    EXPECT_NE(j["error"]["message"].get<std::string>().find("API version 2024-10-21"),
              std::string::npos);
  }
  EXPECT_EQ(post(kChatPath, kHello).status, 200);
  json s = stats();
  EXPECT_EQ(s["by_status"]["429"], 2);
  EXPECT_EQ(s["by_status"]["200"], 1);
  EXPECT_EQ(s["faults_applied"], 2);
  EXPECT_EQ(s["faults_pending"], 0);
}

TEST_F(MockServerTest, FaultsMatchDeploymentAndPathAndCanBeListedAndCleared) {
  start();
  ASSERT_EQ(post("/_mock/faults", R"({"faults":[{"status":500,"match":{"deployment":"b"}},
          {"status":503,"count":-1,"match":{"path_contains":"/embeddings"}}]})")
                .status,
            200);
  json listed = json::parse(get("/_mock/faults").body);
  ASSERT_EQ(listed["faults"].size(), 2u);
  EXPECT_EQ(listed["faults"][1]["count"], -1);
  EXPECT_EQ(post(kChatPath, kHello).status, 200);  // deployment gpt-4o: no match
  Response b = post("/openai/v1/chat/completions",
                    R"({"model":"b","messages":[{"role":"user","content":"x"}]})");
  EXPECT_EQ(b.status, 500);
  EXPECT_EQ(json::parse(b.body)["error"]["type"], "server_error");
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(
        post("/openai/deployments/e/embeddings?api-version=2024-10-21", R"({"input":"x"})").status,
        503);
  }
  EXPECT_EQ(json::parse(del("/_mock/faults").body)["cleared"], 1);
  EXPECT_EQ(
      post("/openai/deployments/e/embeddings?api-version=2024-10-21", R"({"input":"x"})").status,
      200);
  EXPECT_EQ(post("/_mock/faults", R"({"stauts":500})").status, 400);
}

TEST_F(MockServerTest, HeaderFaultAppliesToThatRequestOnly) {
  start();
  Response r = post(kChatPath, kHello,
                    {{"x-mock-fault", R"({"status":400,"body":{"error":{"code":"content_filter"}},)"
                                      R"("headers":{"x-should-retry":"false"}})"}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.body, R"({"error":{"code":"content_filter"}})");
  EXPECT_EQ(r.header("x-should-retry"), "false");
  EXPECT_EQ(post(kChatPath, kHello).status, 200);
  EXPECT_EQ(post(kChatPath, kHello, {{"x-mock-fault", "{oops"}}).status, 400);
  // Fault headers override the defaults instead of duplicating them.
  Response o = post(kChatPath, kHello,
                    {{"x-mock-fault", R"({"headers":{"x-ratelimit-remaining-tokens":"7"}})"}});
  EXPECT_EQ(o.status, 200);
  EXPECT_EQ(o.header("x-ratelimit-remaining-tokens"), "7");
  // null removes a default header.
  Response gone = post(kChatPath, kHello,
                       {{"x-mock-fault", R"({"headers":{"x-ratelimit-remaining-tokens":null}})"}});
  EXPECT_EQ(gone.status, 200);
  EXPECT_EQ(gone.headers.count("x-ratelimit-remaining-tokens"), 0u);
  EXPECT_EQ(gone.headers.count("x-ratelimit-remaining-requests"), 1u);
}

TEST_F(MockServerTest, CloseAfterChunksCutsTheStreamWithoutDone) {
  Options o = base_options();
  o.chunks = 10;
  start(o);
  ASSERT_EQ(post("/_mock/faults", R"({"close_after_chunks":2})").status, 200);
  Response r = post(kChatPath, R"({"messages":[{"role":"user","content":"x"}],"stream":true})");
  EXPECT_EQ(r.status, 200);
  EXPECT_FALSE(r.complete);
  EXPECT_FALSE(r.error.empty());
  auto events = test::sse_events(r.body);
  ASSERT_EQ(events.size(), 4u) << r.body;  // filter, role, 2 content chunks
  EXPECT_EQ(r.body.find("[DONE]"), std::string::npos);
  EXPECT_TRUE(eventually([&] { return stats()["streams_faulted"] == 1; }));
  json s = stats();
  EXPECT_EQ(s["streams_started"], 1);
  EXPECT_EQ(s["streams_completed"], 0);
  EXPECT_EQ(s["in_flight"], 0);
}

TEST_F(MockServerTest, ErrorEventEndsTheStreamAfterContent) {
  Options o = base_options();
  o.chunks = 2;
  start(o);
  Response r = post(kChatPath, R"({"messages":[{"role":"user","content":"x"}],"stream":true})",
                    {{"x-mock-fault", R"({"error_event":true})"}});
  ASSERT_TRUE(r.complete) << r.error;
  auto events = test::sse_events(r.body);
  ASSERT_EQ(events.size(), 5u);
  json last = json::parse(events.back().substr(6));
  EXPECT_EQ(last["error"]["type"], "server_error");
}

TEST_F(MockServerTest, ClientDisconnectMidStreamIsCountedAndStopsTheStream) {
  Options o = base_options();
  o.chunks = 1000;
  o.pace = 200ms;  // slow enough that only the peer watcher (not a write) can notice quickly
  start(o);
  Client c(port());
  Response r = c.send_and_drop(
      Request{
          "POST", kChatPath, {}, R"({"messages":[{"role":"user","content":"x"}],"stream":true})"},
      3);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.chunks.size(), 3u);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(eventually([&] { return stats()["streams_aborted"] == 1; }, 2s));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  // connections_open counts the stats request's own connection.
  EXPECT_TRUE(eventually([&] {
    json s = stats();
    return s["in_flight"] == 0 && s["connections_open"] == 1;
  }));
}

TEST_F(MockServerTest, StatsCountInferenceRequestsOnly) {
  start();
  Client c(port());
  for (int i = 0; i < 3; ++i) {
    Response r = c.send(Request{"POST", kChatPath, {}, kHello});
    ASSERT_EQ(r.status, 200) << r.error;
  }
  EXPECT_EQ(c.send(Request{"POST", "/openai/x?api-version=1", {}, "{}"}).status, 404);
  json s = json::parse(c.send(Request{"GET", "/_mock/stats", {}, ""}).body);
  EXPECT_EQ(s["instance"], "mock");
  EXPECT_EQ(s["requests_total"], 4);
  EXPECT_EQ(s["by_path"]["/openai/deployments/gpt-4o/chat/completions"], 3);
  EXPECT_EQ(s["by_path"]["/openai/x"], 1);
  EXPECT_EQ(s["by_status"]["200"], 3);
  EXPECT_EQ(s["by_status"]["404"], 1);
  EXPECT_EQ(s["connections_total"], 1);  // keep-alive: one connection for everything
  EXPECT_EQ(s["connections_open"], 1);
  EXPECT_EQ(s["in_flight"], 0);
  EXPECT_GE(s["max_in_flight_seen"], 1);
  ASSERT_EQ(post("/_mock/reset", "").status, 200);
  json after = stats();
  EXPECT_EQ(after["requests_total"], 0);
  EXPECT_TRUE(after["by_path"].empty());
}

TEST_F(MockServerTest, CapturesRequestsNewestLast) {
  start();
  post(kChatPath, kHello, {{"api-key", "K"}, {"X-Stainless-Retry-Count", "1"}});
  post("/openai/v1/embeddings", R"({"model":"e","input":"x"})");
  get("/_mock/stats");  // control: not captured
  json all = json::parse(get("/_mock/requests").body)["requests"];
  ASSERT_EQ(all.size(), 2u);
  const json& first = all[0];
  EXPECT_EQ(first["method"], "POST");
  EXPECT_EQ(first["path"], "/openai/deployments/gpt-4o/chat/completions");
  EXPECT_EQ(first["query"]["api-version"], "2024-10-21");
  EXPECT_EQ(first["target"], kChatPath);
  EXPECT_EQ(first["headers"]["api-key"], "K");
  EXPECT_EQ(first["headers"]["x-stainless-retry-count"], "1");
  EXPECT_EQ(first["body"], kHello);
  EXPECT_GT(first["received_at_ms"].get<std::int64_t>(), 0);
  EXPECT_LT(first["seq"], all[1]["seq"]);
  json last = json::parse(get("/_mock/requests?limit=1").body)["requests"];
  ASSERT_EQ(last.size(), 1u);
  EXPECT_EQ(last[0]["path"], "/openai/v1/embeddings");
}

TEST_F(MockServerTest, ResponsesAndFilesArePerInstance) {
  start();
  Options other = base_options();
  other.name = "other";
  MockServer b(other);
  b.start();
  Response created = post("/openai/v1/responses",
                          R"({"model":"gpt-4o","input":"Say hi","max_output_tokens":100})");
  ASSERT_EQ(created.status, 200) << created.body;
  json resp = json::parse(created.body);
  std::string id = resp["id"];
  EXPECT_TRUE(id.starts_with("resp_mock_"));
  EXPECT_EQ(resp["object"], "response");
  EXPECT_EQ(resp["status"], "completed");
  EXPECT_EQ(resp["usage"]["output_tokens"], 10);
  EXPECT_EQ(resp["usage"]["input_tokens"], 2 + 3 + 3);
  EXPECT_EQ(resp["output"][0]["content"][0]["text"], completion_text(10));
  EXPECT_EQ(get("/openai/v1/responses/" + id).status, 200);
  EXPECT_EQ(get("/openai/responses/" + id + "?api-version=2025-04-01-preview").status, 200);
  EXPECT_EQ(test::request(b.port(), Request{"GET", "/openai/v1/responses/" + id, {}, ""}).status,
            404);
  Response chained = test::request(
      b.port(),
      Request{"POST",
              "/openai/v1/responses",
              {},
              R"({"model":"gpt-4o","input":"more","previous_response_id":")" + id + "\"}"});
  EXPECT_EQ(chained.status, 400);
  EXPECT_EQ(json::parse(chained.body)["error"]["code"], "previous_response_not_found");
  EXPECT_EQ(post("/openai/v1/responses",
                 R"({"model":"gpt-4o","input":"more","previous_response_id":")" + id + "\"}")
                .status,
            200);
  EXPECT_EQ(del("/openai/v1/responses/" + id).status, 200);
  EXPECT_EQ(get("/openai/v1/responses/" + id).status, 404);

  Response file = post(
      "/openai/files?api-version=2024-10-21",
      "--b\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--b\r\n"
      "Content-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n\r\n{}\r\n--b--\r\n",
      {{"content-type", "multipart/form-data; boundary=b"}});
  ASSERT_EQ(file.status, 200) << file.body;
  json fj = json::parse(file.body);
  std::string fid = fj["id"];
  EXPECT_TRUE(fid.starts_with("file-mock-"));
  EXPECT_EQ(fj["purpose"], "batch");
  EXPECT_EQ(fj["filename"], "in.jsonl");
  EXPECT_EQ(get("/openai/v1/files/" + fid).status, 200);
  EXPECT_EQ(get("/openai/files/" + fid + "?api-version=2024-10-21").status, 200);
  EXPECT_EQ(test::request(b.port(), Request{"GET", "/openai/v1/files/" + fid, {}, ""}).status, 404);
  b.stop();
}

TEST_F(MockServerTest, FilesListIsNewestFirstWithLimitAfterAndOrder) {
  start();
  std::vector<std::string> ids;
  for (int i = 0; i < 12; ++i) {  // ten and more: the counter's digits must not break the order
    Response r = post("/openai/v1/files", "--b--\r\n", {{"content-type", "multipart/form-data; boundary=b"}});
    ASSERT_EQ(r.status, 200) << r.body;
    ids.push_back(json::parse(r.body)["id"]);
  }
  auto list = [&](const std::string& query) {
    Response r = get("/openai/v1/files" + query);
    EXPECT_EQ(r.status, 200) << r.body;
    return json::parse(r.body);
  };
  auto ids_of = [](const json& page) {
    std::vector<std::string> out;
    for (const auto& f : page["data"]) out.push_back(f["id"]);
    return out;
  };
  std::vector<std::string> newest_first(ids.rbegin(), ids.rend());
  json all = list("");
  EXPECT_EQ(all["object"], "list");
  EXPECT_EQ(ids_of(all), newest_first);
  EXPECT_FALSE(all["has_more"]);
  json first = list("?limit=2");
  EXPECT_EQ(ids_of(first), (std::vector<std::string>{ids[11], ids[10]}));
  EXPECT_TRUE(first["has_more"]);
  EXPECT_EQ(first["first_id"], ids[11]);
  EXPECT_EQ(first["last_id"], ids[10]);
  json last = list("?limit=5&after=" + ids[2]);
  EXPECT_EQ(ids_of(last), (std::vector<std::string>{ids[1], ids[0]}));
  EXPECT_FALSE(last["has_more"]);
  EXPECT_EQ(ids_of(list("?order=asc&limit=3&after=" + ids[0])), (std::vector<std::string>{ids[1], ids[2], ids[3]}));
  json unknown = list("?after=file-elsewhere");
  EXPECT_TRUE(unknown["data"].empty());
  EXPECT_TRUE(unknown["first_id"].is_null());
  EXPECT_EQ(get("/openai/files?api-version=2024-10-21").status, 200);
  Response wrong = del("/openai/v1/files");
  EXPECT_EQ(wrong.status, 405);
  EXPECT_EQ(wrong.header("allow"), "GET, POST");
}

TEST_F(MockServerTest, TpmLimitReturnsAzure429WithRetryHeaders) {
  Options o = base_options();
  o.tpm = 100;
  start(o);
  const std::string body =
      R"({"messages":[{"role":"user","content":"abcd"}],"max_tokens":40})";  // 41
  Response a = post(kChatPath, body);
  ASSERT_EQ(a.status, 200);
  EXPECT_EQ(a.header("x-ratelimit-limit-tokens"), "100");
  EXPECT_EQ(a.header("x-ratelimit-remaining-tokens"), "59");
  EXPECT_EQ(post(kChatPath, body).status, 200);
  Response c = post(kChatPath, body);
  ASSERT_EQ(c.status, 429);
  EXPECT_EQ(c.header("x-ratelimit-remaining-tokens"), "18");
  int retry_ms = std::stoi(c.header("retry-after-ms"));
  EXPECT_GT(retry_ms, 55'000);
  EXPECT_LE(retry_ms, 60'000);
  EXPECT_EQ(c.header("retry-after"), "60");
  json j = json::parse(c.body);
  EXPECT_NE(j["error"]["message"].get<std::string>().find("exceeded token rate limit"),
            std::string::npos);
  EXPECT_NE(j["error"]["message"].get<std::string>().find("ChatCompletions_Create"),
            std::string::npos);
}

TEST_F(MockServerTest, MaxInFlightRejectsWithRetryAfterMs) {
  Options o = base_options();
  o.max_in_flight = 1;
  o.ptu = true;
  start(o);
  Client hung(port());
  Response h = hung.send_and_wait(
      Request{"POST", kChatPath, {{"x-mock-fault", R"({"hang":true})"}}, kHello}, 200ms);
  EXPECT_EQ(h.status, 0);
  EXPECT_EQ(h.error, "timeout");
  EXPECT_EQ(stats()["in_flight"], 1);
  Response r = post(kChatPath, kHello);
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.header("retry-after-ms"), "100");
  EXPECT_NE(r.header("azure-openai-deployment-utilization").find('%'), std::string::npos);
  hung.close();
  EXPECT_TRUE(eventually([&] { return stats()["in_flight"] == 0; }));
  EXPECT_EQ(post(kChatPath, kHello).status, 200);
}

TEST_F(MockServerTest, CloseImmediatelyAndDelay) {
  start();
  Response closed = post(kChatPath, kHello, {{"x-mock-fault", R"({"close_immediately":true})"}});
  EXPECT_EQ(closed.status, 0);
  EXPECT_FALSE(closed.error.empty());
  auto t0 = std::chrono::steady_clock::now();
  Response slow = post(kChatPath, kHello, {{"x-mock-fault", R"({"delay_ms":150})"}});
  EXPECT_EQ(slow.status, 200);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 150ms);
}

TEST_F(MockServerTest, OversizedBodyGets413) {
  start();
  Response r = post(kChatPath, std::string(16 * 1024 * 1024 + 10, 'x'));
  // The mock answers 413 and closes; the client may see the reply or a reset while still sending.
  if (r.status != 0) {
    EXPECT_EQ(r.status, 413);
  }
  EXPECT_EQ(post(kChatPath, kHello).status, 200);
}

TEST_F(MockServerTest, StopClosesHangingConnectionsPromptly) {
  start();
  Client hung(port());
  Response h = hung.send_and_wait(
      Request{"POST", kChatPath, {{"x-mock-fault", R"({"hang":true})"}}, kHello}, 100ms);
  EXPECT_EQ(h.status, 0);
  auto t0 = std::chrono::steady_clock::now();
  server_->stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  EXPECT_TRUE(eventually([&] { return hung.server_closed(); }, 1s));
}

TEST_F(MockServerTest, MultipleThreadsShareOnePort) {
  Options o = base_options();
  o.threads = 2;
  start(o);
  for (int i = 0; i < 20; ++i) ASSERT_EQ(post(kChatPath, kHello).status, 200);
  EXPECT_EQ(stats()["requests_total"], 20);
}

}  // namespace
}  // namespace tollgate::mock

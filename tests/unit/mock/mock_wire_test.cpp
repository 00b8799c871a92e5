// Unit tests of the mock's plain-C++ parts: CLI, wire bodies, faults, TPM window.

#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "mock/handler.hpp"
#include "mock/options.hpp"
#include "mock/state.hpp"
#include "mock/wire.hpp"
#include "mock_client.hpp"

namespace tollgate::mock {
namespace {

using json = nlohmann::json;

CliResult parse(std::vector<const char*> args) {
  args.insert(args.begin(), "tollgate-mock");
  return parse_cli(static_cast<int>(args.size()), args.data());
}

TEST(MockCliTest, ParsesEveryOption) {
  auto r = parse({"--listen",
                  "127.0.0.1:0",
                  "--threads",
                  "2",
                  "--api-key",
                  "k",
                  "--deployment",
                  "gpt-4o",
                  "--deployment",
                  "emb=text-embedding-3-large",
                  "--deployment",
                  "text-embedding-3-small",
                  "--name",
                  "east",
                  "--region",
                  "Sweden Central",
                  "--pace-ms=0",
                  "--chunks",
                  "3",
                  "--ttft-ms",
                  "7",
                  "--tpm",
                  "1000",
                  "--max-in-flight",
                  "4",
                  "--ptu",
                  "--capture",
                  "10"});
  ASSERT_TRUE(r.options) << r.message;
  const Options& o = *r.options;
  EXPECT_EQ(o.listen_host, "127.0.0.1");
  EXPECT_EQ(o.listen_port, 0);
  EXPECT_EQ(o.threads, 2u);
  EXPECT_EQ(o.api_key, "k");
  ASSERT_EQ(o.deployments.size(), 3u);
  EXPECT_EQ(o.deployments[0].model, "gpt-4o-2024-11-20");
  EXPECT_EQ(o.deployments[1].name, "emb");
  EXPECT_EQ(o.deployments[1].model, "text-embedding-3-large");
  EXPECT_EQ(o.deployments[2].model, "text-embedding-3-small");
  EXPECT_EQ(o.name, "east");
  EXPECT_EQ(o.region, "Sweden Central");
  EXPECT_EQ(o.pace.count(), 0);
  EXPECT_EQ(o.chunks, 3u);
  EXPECT_EQ(o.ttft.count(), 7);
  EXPECT_EQ(o.tpm, 1000u);
  EXPECT_EQ(o.max_in_flight, 4u);
  EXPECT_TRUE(o.ptu);
  EXPECT_EQ(o.capture, 10u);
}

TEST(MockCliTest, ReportsEveryErrorAtOnce) {
  auto r = parse({"--threads", "x", "--bogus", "--tls-cert", "c.pem"});
  EXPECT_FALSE(r.options);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.message.find("--threads"), std::string::npos);
  EXPECT_NE(r.message.find("--bogus"), std::string::npos);
  EXPECT_NE(r.message.find("--listen HOST:PORT is required"), std::string::npos);
  EXPECT_NE(r.message.find("--tls-key"), std::string::npos);
}

TEST(MockCliTest, HelpExitsZeroAndIpv6NeedsBrackets) {
  auto help = parse({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.message.find("--listen"), std::string::npos);
  auto v6 = parse({"--listen", "[::1]:8080"});
  ASSERT_TRUE(v6.options);
  EXPECT_EQ(v6.options->listen_host, "::1");
  EXPECT_EQ(v6.options->listen_port, 8080);
  EXPECT_FALSE(parse({"--listen", "::1:8080"}).options);
  EXPECT_FALSE(parse({"--listen", "localhost:70000"}).options);
}

TEST(MockWireTest, ChatPromptTokensAreCharsOverFourPlusMessageOverhead) {
  // 11 + 5 chars = 16 -> 4 tokens; 2 messages -> +6; +3.
  auto r = inspect_body(Operation::ChatCompletions,
                        R"({"messages":[{"role":"system","content":"Hello world"},
                            {"role":"user","content":[{"type":"text","text":"hello"}]}],
                            "max_tokens":50,"n":2})");
  ASSERT_FALSE(r.error);
  EXPECT_EQ(r.params.prompt_tokens, 13u);
  EXPECT_EQ(r.params.prompt_estimate, 4u);
  EXPECT_EQ(tpm_estimate(Operation::ChatCompletions, r.params), 4u + 50u * 2u);
}

TEST(MockWireTest, MaxCompletionTokensWinsAndDefaultsTo16InEstimate) {
  auto a = inspect_body(Operation::ChatCompletions,
                        R"({"messages":[{"role":"user","content":"abcd"}],"max_tokens":5,
                            "max_completion_tokens":7})");
  ASSERT_FALSE(a.error);
  EXPECT_EQ(a.params.max_tokens, 7u);
  auto b = inspect_body(Operation::ChatCompletions,
                        R"({"messages":[{"role":"user","content":"abcd"}]})");
  EXPECT_EQ(tpm_estimate(Operation::ChatCompletions, b.params), 1u + 16u);
  auto c =
      inspect_body(Operation::Completions, R"({"prompt":"abcdefgh","best_of":3,"max_tokens":10})");
  ASSERT_FALSE(c.error);
  EXPECT_EQ(tpm_estimate(Operation::Completions, c.params), 2u + 30u);
}

TEST(MockWireTest, RejectsBadBodiesWithAzureShapedErrors) {
  for (std::string_view body :
       {std::string_view("{"), std::string_view("[]"), std::string_view(""),
        std::string_view(R"({"messages":[]})"), std::string_view(R"({"messages":"x"})"),
        std::string_view(R"({"messages":[{"role":"user","content":"x"}],"n":0})"),
        std::string_view(R"({"messages":[{"role":"user","content":"x"}],"stream":"yes"})"),
        std::string_view(R"({"messages":[{"role":"user","content":"x"}],"max_tokens":-1})"),
        std::string_view(R"({"messages":[1],"stream_options":{"include_usage":true}})")}) {
    auto r = inspect_body(Operation::ChatCompletions, body);
    ASSERT_TRUE(r.error) << body;
    EXPECT_EQ(r.error->status, 400);
    json j = json::parse(r.error->body);
    EXPECT_TRUE(j["error"]["message"].is_string()) << r.error->body;
  }
  std::string deep(100000, '[');
  EXPECT_TRUE(inspect_body(Operation::ChatCompletions, deep).error);
  EXPECT_TRUE(json_too_deep(deep, 256));
  EXPECT_FALSE(json_too_deep(R"({"a":"[[[[[[[[[["})", 3));
}

TEST(MockWireTest, EmbeddingsAcceptEveryInputShape) {
  auto s = inspect_body(Operation::Embeddings, R"({"input":"abcdefgh"})");
  ASSERT_FALSE(s.error);
  EXPECT_EQ(s.params.inputs.size(), 1u);
  EXPECT_EQ(s.params.prompt_tokens, 2u);
  auto a = inspect_body(Operation::Embeddings, R"({"input":["a","bbbbb"],"dimensions":4})");
  ASSERT_FALSE(a.error);
  EXPECT_EQ(a.params.inputs.size(), 2u);
  EXPECT_EQ(a.params.prompt_tokens, 3u);
  EXPECT_EQ(a.params.dimensions, 4u);
  auto t = inspect_body(Operation::Embeddings, R"({"input":[1,2,3]})");
  ASSERT_FALSE(t.error);
  EXPECT_EQ(t.params.inputs.size(), 1u);
  EXPECT_EQ(t.params.prompt_tokens, 3u);
  auto tt =
      inspect_body(Operation::Embeddings, R"({"input":[[1,2],[3]],"encoding_format":"base64"})");
  ASSERT_FALSE(tt.error);
  EXPECT_EQ(tt.params.inputs.size(), 2u);
  EXPECT_TRUE(tt.params.base64);
  EXPECT_TRUE(inspect_body(Operation::Embeddings, R"({"input":""})").error);
  EXPECT_TRUE(inspect_body(Operation::Embeddings, R"({"input":[]})").error);
  EXPECT_TRUE(inspect_body(Operation::Embeddings, R"({"input":[{"x":1}]})").error);
  EXPECT_TRUE(
      inspect_body(Operation::Embeddings, R"({"input":"a","encoding_format":"hex"})").error);
}

TEST(MockWireTest, EmbeddingVectorsAreDeterministicUnitVectors) {
  auto a = embedding_values(42, 8);
  auto b = embedding_values(42, 8);
  EXPECT_EQ(a, b);
  double norm = 0;
  for (float x : a) norm += double{x} * x;
  EXPECT_NEAR(norm, 1.0, 1e-5);
  EXPECT_NE(embedding_values(43, 8), a);
}

TEST(MockWireTest, Base64AndPercentDecoding) {
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(test::base64_decode("Zm9vYmE="), "fooba");
  EXPECT_EQ(percent_decode("my%20dep%2Fx"), "my dep/x");
  EXPECT_EQ(percent_decode("bad%zz%4"), "bad%zz%4");
}

TEST(MockWireTest, JsonStringEscapingReplacesInvalidUtf8) {
  std::string out;
  append_json_string(out, std::string("a\"b\\c\n\x01\xff\xc3\xa9", 10));
  EXPECT_EQ(out, "\"a\\\"b\\\\c\\n\\u0001\\ufffd\xc3\xa9\"");
  EXPECT_TRUE(json::accept(out));
}

TEST(MockWireTest, ChatStreamPlanHasAzureOrder) {
  CompletionSpec s;
  s.id = "chatcmpl-x";
  s.created = 1;
  s.model = "m";
  s.fingerprint = "fp";
  s.tokens = 2;
  auto plan = chat_stream(s, true, StreamEnd::Normal);
  ASSERT_EQ(plan.events.size(), 7u);  // filter, role, 2 content, finish, usage, DONE
  EXPECT_EQ(plan.first_content, 2u);
  EXPECT_EQ(plan.content_events, 2u);
  EXPECT_EQ(plan.events.back(), "data: [DONE]\n\n");
  for (std::size_t i = 0; i + 1 < plan.events.size(); ++i) {
    ASSERT_TRUE(plan.events[i].starts_with("data: {")) << i;
    ASSERT_TRUE(plan.events[i].ends_with("}\n\n")) << i;
    json j = json::parse(plan.events[i].substr(6));
    EXPECT_TRUE(j.contains("usage")) << i;
  }
  auto err = chat_stream(s, false, StreamEnd::ErrorEvent);
  ASSERT_EQ(err.events.size(), 5u);  // filter, role, 2 content, error
  EXPECT_TRUE(json::parse(err.events.back().substr(6)).contains("error"));
}

TEST(MockFaultTest, ParsesFieldsAndRejectsUnknownKeys) {
  auto ok =
      parse_fault(json::parse(R"({"status":429,"headers":{"retry-after-ms":"1500","retry-after":2},
      "delay_ms":10,"count":-1,"match":{"path_contains":"chat","deployment":"d"},
      "body":{"x":1}})"));
  ASSERT_TRUE(ok.fault) << ok.error;
  EXPECT_EQ(ok.fault->status, 429);
  ASSERT_EQ(ok.fault->headers.size(), 2u);
  // nlohmann::json objects are ordered by key.
  EXPECT_EQ(ok.fault->headers[0], std::make_pair(std::string("retry-after"), std::string("2")));
  EXPECT_EQ(ok.fault->headers[1],
            std::make_pair(std::string("retry-after-ms"), std::string("1500")));
  EXPECT_EQ(ok.fault->count, -1);
  EXPECT_EQ(ok.fault->body, R"({"x":1})");
  EXPECT_EQ(ok.fault->match_deployment, "d");
  auto bad = parse_fault(json::parse(R"({"stauts":429})"));
  EXPECT_FALSE(bad.fault);
  EXPECT_NE(bad.error.find("stauts"), std::string::npos);
  EXPECT_FALSE(parse_fault(json::parse(R"({"status":99})")).fault);
  EXPECT_FALSE(parse_fault(json::parse(R"({"count":0})")).fault);
  EXPECT_FALSE(parse_fault(json::parse(R"({"headers":{"a":"b\r\nc"}})")).fault);
}

TEST(MockFaultTest, QueueConsumesFirstMatchInOrder) {
  FaultQueue q;
  std::vector<Fault> faults;
  faults.push_back(*parse_fault(json::parse(R"({"status":500,"match":{"deployment":"b"}})")).fault);
  faults.push_back(*parse_fault(json::parse(R"({"status":429,"count":2})")).fault);
  q.add(std::move(faults));
  EXPECT_EQ(q.take("/p", "a")->status, 429);
  EXPECT_EQ(q.take("/p", "b")->status, 500);
  EXPECT_EQ(q.take("/p", "b")->status, 429);
  EXPECT_FALSE(q.take("/p", "b"));
  EXPECT_EQ(q.pending(), 0u);
}

TEST(MockTpmTest, SlidingWindowAdmitsRejectsAndRecovers) {
  TpmWindow w(100);
  EXPECT_EQ(w.limit_requests(), 1u);
  auto a = w.admit(60, 0);
  EXPECT_TRUE(a.admitted);
  EXPECT_EQ(a.remaining_tokens, 40u);
  EXPECT_TRUE(w.admit(30, 10'000).admitted);
  auto r = w.admit(30, 20'000);  // 90 + 30 > 100: must wait for the first charge to expire
  EXPECT_FALSE(r.admitted);
  EXPECT_EQ(r.retry_after_ms, 40'000u);
  EXPECT_EQ(r.remaining_tokens, 10u);
  EXPECT_NEAR(w.utilization(20'000), 90.0, 1e-9);
  EXPECT_TRUE(w.admit(30, 60'000).admitted);  // the 60-token charge left the window
  EXPECT_FALSE(w.admit(101, 60'000).admitted);
  w.clear();
  EXPECT_TRUE(w.admit(100, 60'001).admitted);
}

TEST(MockStateTest, CaptureRingKeepsNewestInOrder) {
  CaptureRing ring(3);
  std::vector<HeaderField> headers = {{"A", "1"}, {"a", "2"}};
  for (std::uint64_t i = 1; i <= 5; ++i) {
    ring.push(i, 1000 + static_cast<std::int64_t>(i), "POST", "/x?api-version=1&b", headers,
              std::string(70'000, 'b'));
  }
  json all = ring.to_json(100);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0]["seq"], 3);
  EXPECT_EQ(all[2]["seq"], 5);
  EXPECT_EQ(all[2]["query"]["api-version"], "1");
  EXPECT_EQ(all[2]["query"]["b"], "");
  EXPECT_EQ(all[2]["headers"]["a"], "1, 2");
  EXPECT_EQ(all[2]["path"], "/x");
  EXPECT_EQ(all[2]["body"].get<std::string>().size(), CaptureRing::kBodyLimit);
  EXPECT_EQ(all[2]["body_bytes"], 70'000);
  EXPECT_EQ(all[2]["received_at_ms"], 1005);
  json last = ring.to_json(1);
  ASSERT_EQ(last.size(), 1u);
  EXPECT_EQ(last[0]["seq"], 5);
  ring.clear();
  EXPECT_TRUE(ring.to_json(10).empty());
  ring.push(6, 0, "GET", "/y", {}, "");
  ASSERT_EQ(ring.to_json(10).size(), 1u);
  EXPECT_EQ(ring.to_json(10)[0]["seq"], 6);
}

}  // namespace
}  // namespace tollgate::mock

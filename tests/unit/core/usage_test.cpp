#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <sstream>

#include "tollgate/core/usage.hpp"

using namespace tollgate::core;

namespace {

std::string fixture(const char* name) {
  std::ifstream in(std::string(TOLLGATE_FIXTURES) + "/" + name, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> events_of(const std::string& bytes, const std::vector<std::size_t>& cuts) {
  SseScanner scanner;
  std::vector<std::string> events;
  std::size_t pos = 0;
  for (auto cut : cuts) {
    scanner.feed(std::string_view(bytes).substr(pos, cut - pos),
                 [&](std::string_view d) { events.emplace_back(d); });
    pos = cut;
  }
  scanner.feed(std::string_view(bytes).substr(pos), [&](std::string_view d) { events.emplace_back(d); });
  return events;
}

TEST(SseScannerTest, SplitsEventsWhateverTheChunking) {
  auto bytes = fixture("chat-stream-usage.sse");
  auto whole = events_of(bytes, {});
  ASSERT_EQ(whole.size(), 6u);
  EXPECT_EQ(whole.back(), "[DONE]");
  // Byte by byte.
  std::vector<std::size_t> every;
  for (std::size_t i = 1; i < bytes.size(); ++i) every.push_back(i);
  EXPECT_EQ(events_of(bytes, every), whole);
  // Random splits.
  std::mt19937 rng(42);
  for (int round = 0; round < 200; ++round) {
    std::vector<std::size_t> cuts;
    std::size_t pos = 0;
    while (true) {
      pos += 1 + rng() % 97;
      if (pos >= bytes.size()) break;
      cuts.push_back(pos);
    }
    ASSERT_EQ(events_of(bytes, cuts), whole) << "round " << round;
  }
}

TEST(SseScannerTest, HandlesCrLfCrAndMultilineData) {
  SseScanner s;
  std::vector<std::string> ev;
  s.feed("data: a\r\ndata:b\r\n\r\ndata: c\r\rdata: d\n\n:comment\n\nevent: x\ndata\n\n",
         [&](std::string_view d) { ev.emplace_back(d); });
  ASSERT_EQ(ev.size(), 4u);
  EXPECT_EQ(ev[0], "a\nb");
  EXPECT_EQ(ev[1], "c");
  EXPECT_EQ(ev[2], "d");
  EXPECT_EQ(ev[3], "");
}

TEST(SseScannerTest, OversizedEventsAreSkippedWithBoundedMemory) {
  SseScanner s(64);
  std::vector<std::string> ev;
  s.feed("data: " + std::string(1000, 'x') + "\n\ndata: ok\n\n", [&](std::string_view d) { ev.emplace_back(d); });
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0], "ok");
  EXPECT_EQ(s.oversized(), 1u);
}

TEST(StreamObserverTest, FindsUsageAndDone) {
  auto bytes = fixture("chat-stream-usage.sse");
  std::mt19937 rng(7);
  for (int round = 0; round < 50; ++round) {
    StreamObserver o;
    std::size_t pos = 0;
    while (pos < bytes.size()) {
      auto n = std::min<std::size_t>(1 + rng() % 40, bytes.size() - pos);
      o.feed(std::string_view(bytes).substr(pos, n));
      pos += n;
    }
    ASSERT_TRUE(o.usage().present);
    EXPECT_EQ(o.usage().prompt, 19u);
    EXPECT_EQ(o.usage().completion, 7u);
    EXPECT_EQ(o.usage().total, 26u);
    EXPECT_EQ(o.usage().cached, 4u);
    EXPECT_EQ(o.usage().reasoning, 2u);
    EXPECT_TRUE(o.done());
    EXPECT_EQ(o.error_events(), 0u);
  }
}

TEST(StreamObserverTest, CountsErrorEventsAndMissingUsage) {
  StreamObserver o;
  o.feed("data: {\"choices\":[],\"usage\":null}\n\ndata: {\"error\":{\"code\":\"x\",\"message\":\"y\"}}\n\n");
  EXPECT_FALSE(o.usage().present);
  EXPECT_FALSE(o.done());
  EXPECT_EQ(o.error_events(), 1u);
}

TEST(JsonUsageScannerTest, FindsTopLevelUsageInAnySplit) {
  auto body = fixture("chat-completion.json");
  std::mt19937 rng(3);
  for (int round = 0; round < 100; ++round) {
    JsonUsageScanner s;
    std::size_t pos = 0;
    while (pos < body.size()) {
      auto n = std::min<std::size_t>(round == 0 ? 1 : 1 + rng() % 64, body.size() - pos);
      s.feed(std::string_view(body).substr(pos, n));
      pos += n;
    }
    const auto& u = s.usage();
    ASSERT_TRUE(u.present) << round;
    EXPECT_EQ(u.prompt, 30u);  // not the 999 in a string nor the nested 555
    EXPECT_EQ(u.completion, 12u);
    EXPECT_EQ(u.total, 42u);
    EXPECT_EQ(u.cached, 8u);
  }
}

TEST(JsonUsageScannerTest, ResponsesApiNamesAndAbsentUsage) {
  JsonUsageScanner s;
  s.feed(R"({"id":"resp_1","usage":{"input_tokens":5,"output_tokens":3,"output_tokens_details":{"reasoning_tokens":1}}})");
  EXPECT_EQ(s.usage().prompt, 5u);
  EXPECT_EQ(s.usage().completion, 3u);
  EXPECT_EQ(s.usage().total, 8u);
  EXPECT_EQ(s.usage().reasoning, 1u);
  JsonUsageScanner none;
  none.feed(R"({"object":"list","data":[],"usage":null})");
  EXPECT_FALSE(none.usage().present);
  JsonUsageScanner garbage;
  garbage.feed("\x01\xff{{{{\"usage\":{\"prompt_tokens\":-5");
  EXPECT_FALSE(garbage.usage().present);
}

TEST(JsonUsageScannerTest, BoundedCapture) {
  JsonUsageScanner s(32);
  s.feed(R"({"usage":{"prompt_tokens":1,"pad":")" + std::string(1000, 'x') + R"("}})");
  EXPECT_FALSE(s.usage().present);
}

}  // namespace

namespace {

std::string strip_all(const std::string& stream, std::size_t piece) {
  tollgate::core::UsageStripper s;
  std::string out;
  for (std::size_t i = 0; i < stream.size(); i += piece) out += s.feed(stream.substr(i, piece));
  return out + s.finish();
}

}  // namespace

// The usage object is read from the scan (no DOM); the DOM reading is the reference, and the two
// agree on the odd cases too: integers beyond int64 and fractions count 0, the last of a
// repeated name wins, escaped names take the DOM path. (fuzz_parsers checks any input.)
TEST(ParseUsageTest, TheScanReadsWhatTheDomReads) {
  for (std::string json : {
           std::string(R"({"prompt_tokens":12,"completion_tokens":30,"total_tokens":42,"prompt_tokens_details":{"cached_tokens":5},"completion_tokens_details":{"reasoning_tokens":7}})"),
           std::string(R"({"input_tokens":3,"output_tokens":4,"input_tokens_details":{"cached_tokens":1},"input_tokens":9})"),
           std::string(R"({"prompt_tokens":9223372036854775807,"completion_tokens":9223372036854775808,"total_tokens":1.0})"),
           std::string(R"({"prompt_tokens":5,"completion_tokens_details":{"reasoning_tokens":74444444444444444444444444}})"),
           std::string(R"({"prompt_tokens":-3,"completion_tokens":null})"),
           std::string(R"({"pr\u006fmpt_tokens":2})"),
           std::string(R"({"other":1})"),
           std::string("[1]"),
       }) {
    Usage scanned, dom;
    EXPECT_EQ(parse_usage(json, scanned), parse_usage_dom(json, dom)) << json;
    EXPECT_EQ(scanned.prompt, dom.prompt) << json;
    EXPECT_EQ(scanned.completion, dom.completion) << json;
    EXPECT_EQ(scanned.total, dom.total) << json;
    EXPECT_EQ(scanned.cached, dom.cached) << json;
    EXPECT_EQ(scanned.reasoning, dom.reasoning) << json;
    EXPECT_EQ(scanned.present, dom.present) << json;
  }
}

TEST(UsageStripper, GivesBackTheStreamTheClientAskedFor) {
  // What a backend sends with include_usage, and what it sends without.
  const std::string with =
      "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"prompt_filter_results\":[],\"usage\":null}\n\n"
      "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"},\"index\":0}],\"id\":\"c1\",\"usage\":null}\n\n"
      "data: {\"usage\":null,\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\",\"index\":0}]}\r\n\r\n"
      "data: {\"choices\":[],\"id\":\"c1\",\"usage\":{\"completion_tokens\":1,\"prompt_tokens\":5,\"total_tokens\":6}}\n\n"
      "data: [DONE]\n\n";
  const std::string without =
      "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"prompt_filter_results\":[]}\n\n"
      "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"},\"index\":0}],\"id\":\"c1\"}\n\n"
      "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\",\"index\":0}]}\r\n\r\n"
      "data: [DONE]\n\n";
  for (std::size_t piece : {1u, 2u, 3u, 7u, 64u, 4096u}) {
    EXPECT_EQ(strip_all(with, piece), without) << "pieces of " << piece;
  }
  // Text that merely mentions usage is left alone; an unterminated tail comes out as it is.
  const std::string content = "data: {\"choices\":[{\"delta\":{\"content\":\"usage\\\":null\"}}]}\n\n";
  EXPECT_EQ(strip_all(content, 5), content);
  EXPECT_EQ(strip_all("data: {\"partial\"", 3), "data: {\"partial\"");
}

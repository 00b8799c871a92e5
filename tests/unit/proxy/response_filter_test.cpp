#include "proxy/response_filter.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

using tollgate::pipeline::RequestContext;
using tollgate::core::Usage;
using namespace tollgate::proxy;

std::string fixture(const char* name) {
  std::ifstream in(std::string(TOLLGATE_FIXTURES) + "/" + name, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

constexpr ResponseHead kSse{200, true};
constexpr ResponseHead kJson{200, false};

// Feeds `body` to `f` in pieces of `piece` bytes (the last one flagged) and returns what went on.
template <class F>
std::string feed(F& f, std::string_view body, std::size_t piece) {
  std::string out;
  for (std::size_t i = 0; i < body.size(); i += piece) {
    BodyChunk chunk{body.substr(i, piece), i + piece >= body.size()};
    f.on_chunk(chunk);
    out.append(chunk.bytes);
  }
  return out;
}

// What a backend sends when the gateway asked for usage, and what the client asked for.
const std::string kWithUsage =
    "data: "
    "{\"choices\":[],\"created\":0,\"id\":\"\",\"prompt_filter_results\":[],\"usage\":null}\n\n"
    "data: "
    "{\"choices\":[{\"delta\":{\"content\":\"Hel\"},\"index\":0}],\"id\":\"c1\",\"usage\":null}\n\n"
    "data: "
    "{\"choices\":[{\"delta\":{\"content\":\"lo\"},\"index\":0}],\"id\":\"c1\",\"usage\":null}\n\n"
    "data: {\"choices\":[],\"id\":\"c1\",\"usage\":{\"completion_tokens\":2,\"prompt_tokens\":5,"
    "\"total_tokens\":7}}\n\n"
    "data: [DONE]\n\n";
const std::string kWithoutUsage =
    "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"prompt_filter_results\":[]}\n\n"
    "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"},\"index\":0}],\"id\":\"c1\"}\n\n"
    "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"},\"index\":0}],\"id\":\"c1\"}\n\n"
    "data: [DONE]\n\n";

TEST(UsageObserverTest, ReadsAStreamsUsageInAnySplit) {
  auto sse = fixture("chat-stream-usage.sse");
  for (std::size_t piece : {1u, 7u, 64u, 100000u}) {
    Usage usage;
    UsageObserver f(usage);
    f.on_head(kSse);
    EXPECT_EQ(feed(f, sse, piece), sse) << "an observer passes the bytes on untouched";
    f.on_end(BodyEnd::kComplete);
    EXPECT_TRUE(usage.present) << piece;
    EXPECT_EQ(usage.prompt, 19u);
    EXPECT_EQ(usage.completion, 7u);
    EXPECT_EQ(usage.total, 26u);
    EXPECT_EQ(usage.cached, 4u);
    EXPECT_EQ(usage.reasoning, 2u);
  }
}

TEST(UsageObserverTest, ReadsAJsonBodysTopLevelUsage) {
  Usage usage;
  UsageObserver f(usage);
  f.on_head(kJson);
  feed(f, fixture("chat-completion.json"), 13);
  f.on_end(BodyEnd::kComplete);
  EXPECT_EQ(usage.prompt, 30u);
  EXPECT_EQ(usage.completion, 12u);
  EXPECT_EQ(usage.total, 42u);
}

TEST(UsageObserverTest, AStreamCutBeforeItsUsageBillsNone) {
  Usage usage;
  usage.present = true;  // whatever was there is replaced by what this answer carried
  UsageObserver f(usage);
  f.on_head(kSse);
  feed(f, std::string_view(kWithUsage).substr(0, kWithUsage.find("data: {\"choices\":[],\"id\"")),
       9);
  f.on_end(BodyEnd::kBackendFailed);
  EXPECT_FALSE(usage.present);
}

TEST(OutputTextCaptureTest, KeepsTheTextOfTheRelayedStreamOnly) {
  Usage usage;
  UsageObserver parse(usage);
  std::string text = "an earlier attempt's text";
  OutputTextCapture f(&text, parse.stream());
  parse.on_head(kSse);
  f.on_head(kSse);
  EXPECT_EQ(text, "");
  // A stream cut after two deltas: their text is there to be counted.
  auto cut =
      std::string_view(kWithUsage).substr(0, kWithUsage.find("data: {\"choices\":[],\"id\""));
  for (std::size_t i = 0; i < cut.size(); i += 5) {
    BodyChunk chunk{cut.substr(i, 5), false};
    parse.on_chunk(chunk);
    f.on_chunk(chunk);
  }
  f.on_end(BodyEnd::kClientGone);
  EXPECT_EQ(text, "Hello");
}

TEST(OutputTextCaptureTest, LeavesJsonAnswersAndDisabledRequestsAlone) {
  Usage usage;
  UsageObserver parse(usage);
  std::string text = "kept";
  OutputTextCapture json(&text, parse.stream());
  json.on_head(kJson);
  EXPECT_EQ(text, "kept");
  OutputTextCapture off(nullptr, parse.stream());
  off.on_head(kSse);
  parse.on_head(kSse);
  feed(parse, kWithUsage, 11);
  EXPECT_EQ(text, "kept");
}

// The id is known on the answer's last chunk, before the relay writes it: a client that uses
// the object as soon as it has the answer finds it known (issue 13).
TEST(CreatedIdCaptureTest, ReadsTheIdOfACompleteJsonAnswerOnItsLastChunk) {
  const std::string body = R"({"id":"file-abc123","object":"file","bytes":120,"purpose":"batch"})";
  tollgate::core::AnswerIds id;
  std::vector<std::string> told;
  CreatedIdCapture::Notify notify = [&](const tollgate::core::AnswerIds& ids) { told.push_back(ids.id); };
  CreatedIdCapture f(true, id, &notify);
  f.on_head(kJson);
  BodyChunk first{std::string_view(body).substr(0, 20), false};
  f.on_chunk(first);
  EXPECT_TRUE(id.empty()) << "a JSON answer is read only once complete";
  BodyChunk last{std::string_view(body).substr(20), true};
  f.on_chunk(last);
  EXPECT_EQ(id.id, "file-abc123");
  EXPECT_EQ(told, std::vector<std::string>{"file-abc123"});
  f.on_end(BodyEnd::kComplete);
  EXPECT_EQ(told.size(), 1u) << "told once";
}

TEST(CreatedIdCaptureTest, IgnoresCutErrorAndUnwantedAnswers) {
  const std::string body = R"({"id":"file-abc123","object":"file"})";
  tollgate::core::AnswerIds cut_id, error_id, unwanted_id;
  CreatedIdCapture cut(true, cut_id), error(true, error_id), unwanted(false, unwanted_id);
  cut.on_head(kJson);
  error.on_head(ResponseHead{400, false});
  unwanted.on_head(kJson);
  BodyChunk never_last{body, false};  // a body the backend cut never has its last chunk
  cut.on_chunk(never_last);
  feed(error, body, 5);
  feed(unwanted, body, 5);
  cut.on_end(BodyEnd::kBackendFailed);
  cut.on_end(BodyEnd::kClientGone);
  error.on_end(BodyEnd::kComplete);
  unwanted.on_end(BodyEnd::kComplete);
  EXPECT_TRUE(cut_id.empty());
  EXPECT_TRUE(error_id.empty());
  EXPECT_TRUE(unwanted_id.empty());
}

TEST(CreatedIdCaptureTest, ABodyOverTheBoundGivesNoId) {
  std::string body =
      R"({"id":"file-big","data":")" + std::string(CreatedIdCapture::kMaxBody, 'x') + "\"}";
  tollgate::core::AnswerIds id;
  CreatedIdCapture f(true, id);
  f.on_head(kJson);
  feed(f, body, 1u << 16);
  f.on_end(BodyEnd::kComplete);
  EXPECT_TRUE(id.empty());
}

TEST(CreatedIdCaptureTest, TakesAStreamsFirstIdAsItPasses) {
  const std::string sse =
      "event: response.created\n"
      "data: "
      "{\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\"}}"
      "\n\n"
      "data: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_2\"}}\n\n";
  tollgate::core::AnswerIds id;
  CreatedIdCapture f(true, id);
  f.on_head(kSse);
  feed(f, sse.substr(0, sse.find("data: {\"type\":\"response.completed")), 3);
  EXPECT_EQ(id.id, "resp_1") << "known before the stream ends";
  feed(f, sse.substr(sse.find("data: {\"type\":\"response.completed")), 3);
  f.on_end(BodyEnd::kClientGone);
  EXPECT_EQ(id.id, "resp_1");
}

TEST(UsageStripFilterTest, GivesBackTheStreamTheClientAskedFor) {
  for (std::size_t piece : {1u, 3u, 64u, 4096u}) {
    UsageStripFilter f(true);
    f.on_head(kSse);
    EXPECT_EQ(feed(f, kWithUsage, piece), kWithoutUsage) << "pieces of " << piece;
  }
  // An unterminated last event is held back until the last chunk, then released as it is.
  UsageStripFilter tail(true);
  tail.on_head(kSse);
  EXPECT_EQ(feed(tail, "data: {\"partial\"", 4), "data: {\"partial\"");
}

TEST(UsageStripFilterTest, PassesBytesThroughWithoutCopyWhenInactive) {
  UsageStripFilter unwanted(false), json(true);
  unwanted.on_head(kSse);
  json.on_head(kJson);
  for (auto* f : {&unwanted, &json}) {
    BodyChunk chunk{kWithUsage, false};
    f->on_chunk(chunk);
    EXPECT_EQ(chunk.bytes.data(), kWithUsage.data());
    EXPECT_EQ(chunk.bytes.size(), kWithUsage.size());
  }
}

TEST(ResponseFiltersTest, ObserversSeeTheBackendsBytesBeforeTheStripperRewritesThem) {
  RequestContext ctx;
  ctx.strip_usage = true;
  ctx.count_output = true;
  ctx.output_text = "stale";
  tollgate::core::AnswerIds id;
  ResponseFilters filters(ctx, false, id);
  filters.on_head(kSse);
  std::string out;
  for (std::size_t i = 0; i < kWithUsage.size(); i += 10) {
    out +=
        filters.on_chunk(std::string_view(kWithUsage).substr(i, 10), i + 10 >= kWithUsage.size());
  }
  filters.on_end(BodyEnd::kComplete);
  EXPECT_EQ(out, kWithoutUsage);
  EXPECT_TRUE(ctx.usage.present) << "the usage the client does not see is billed";
  EXPECT_EQ(ctx.usage.total, 7u);
  EXPECT_EQ(ctx.output_text, "Hello");
}

TEST(ResponseFiltersTest, APlainAnswerPassesUntouched) {
  RequestContext ctx;
  tollgate::core::AnswerIds id;
  ResponseFilters filters(ctx, false, id);
  filters.on_head(kJson);
  auto body = fixture("chat-completion.json");
  auto out = filters.on_chunk(body, true);
  EXPECT_EQ(out.data(), body.data()) << "no copy when nothing rewrites";
  filters.on_end(BodyEnd::kComplete);
  EXPECT_EQ(ctx.usage.total, 42u);
  EXPECT_EQ(ctx.output_text, "");
}

}  // namespace

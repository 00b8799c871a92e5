// The relay driven by beast::test::stream on both sides: the answers it relays, and the fail
// matrix (style.md §11) — a failure at every I/O operation of the backend's side and of the
// client's side, each time asserting a defined RelayResult.
#include "proxy/relay.hpp"

#include <gtest/gtest.h>

#include <boost/beast/_experimental/test/stream.hpp>
#include <fstream>
#include <memory>
#include <sstream>

namespace {

using namespace tollgate;
using namespace tollgate::proxy;
using metrics::UpstreamError;
using Kind = AttemptResult::Kind;
using TestStream = beast::test::stream;

std::string fixture(const char* name) {
  std::ifstream in(std::string(TOLLGATE_FIXTURES) + "/" + name, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// A deadline that never fires on its own: the tests play timeouts by failing an operation with
/// operation_aborted while `fired` is set (what proxy::Deadline does on a socket).
struct FakeDeadline {
  bool fired = false;
  void after(std::chrono::steady_clock::duration) {}
  void never() {}
  bool expired() const { return fired; }
};
static_assert(IoDeadline<FakeDeadline>);

enum class Side { kBackend, kClient };

/// One exchange: what the backend answers and what the request asked of the gateway.
struct Scenario {
  std::string answer;  // the backend's bytes, head and body
  bool strip_usage = false;
  bool count_output = false;
  bool hold_retryable = false;
  std::size_t read_size = 64;    // bytes per backend read: more pieces, more failure points
  std::size_t write_size = 128;  // bytes per client write
};

struct Run {
  RelayResult result;
  std::string client_saw;        // the bytes that reached the client
  std::string backend_got;       // the request as the backend received it
  std::size_t backend_read = 0;  // bytes of the answer the relay read
  pipeline::RequestContext ctx;
  metrics::RouteCells cells;
  bool finished = false;
};

using TestClient = Client<TestStream, FakeDeadline>;
using TestUpstream = Upstream<TestStream, FakeDeadline>;

net::awaitable<void> drive(TestClient down, TestUpstream up, const RelayJob& job, Run& run) {
  run.result = co_await relay(down, up, job, run.ctx);
  run.finished = true;
}

const UpRequest kRequest{
    "POST /openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21 HTTP/1.1\r\n"
    "Host: backend\r\napi-key: k\r\nContent-Length: 2\r\n\r\n",
    "{}"};

/// Relays `s` once; `fc` (if any) fails the operations of `side` from its count on, with `ec`.
std::unique_ptr<Run> relay_once(const Scenario& s, Side side = Side::kBackend,
                                beast::test::fail_count* fc = nullptr,
                                bool deadline_fired = false) {
  auto run = std::make_unique<Run>();
  net::io_context ioc;
  beast::test::fail_count never{1u << 30};
  TestStream up(ioc, side == Side::kBackend && fc ? *fc : never);
  TestStream backend(ioc);
  up.connect(backend);
  up.append(s.answer);
  up.close_remote();  // reads past the answer see EOF
  up.read_size(s.read_size);
  TestStream down(ioc, side == Side::kClient && fc ? *fc : never);
  TestStream client(ioc);
  down.connect(client);
  down.write_size(s.write_size);

  run->ctx.request_id = "req-1";
  run->ctx.strip_usage = s.strip_usage;
  run->ctx.count_output = s.count_output;
  FakeDeadline up_deadline{deadline_fired};
  FakeDeadline down_deadline;
  beast::flat_buffer buffer;
  RelayJob job{kRequest,
               http::verb::post,
               11,
               true,
               AttemptOptions{s.hold_retryable, false},
               RelaySettings{{}, {}, {}, "b1"},
               run->cells,
               nullptr};
  net::co_spawn(
      ioc, drive(TestClient{down, down_deadline}, TestUpstream{up, buffer, up_deadline}, job, *run),
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
  ioc.run_for(std::chrono::seconds(10));
  run->client_saw = std::string(client.str());
  run->backend_got = std::string(backend.str());
  run->backend_read = up.nread_bytes();
  return run;
}

/// An HTTP/1.1 answer as a client parses it.
struct Seen {
  std::string head;
  std::string body;       // de-chunked
  bool complete = false;  // the message ended (last chunk, or all of Content-Length)
  bool chunked = false;
};

Seen parse_answer(std::string_view raw) {
  Seen seen;
  auto end = raw.find("\r\n\r\n");
  if (end == std::string_view::npos) return seen;
  seen.head = std::string(raw.substr(0, end + 4));
  auto rest = raw.substr(end + 4);
  seen.chunked = seen.head.find("Transfer-Encoding: chunked") != std::string::npos;
  if (!seen.chunked) {
    auto cl = seen.head.find("Content-Length: ");
    seen.body = std::string(rest);
    seen.complete =
        cl != std::string::npos && std::stoul(seen.head.substr(cl + 16)) == seen.body.size();
    return seen;
  }
  for (;;) {
    auto line = rest.find("\r\n");
    if (line == std::string_view::npos) return seen;
    auto size = std::stoul(std::string(rest.substr(0, line)), nullptr, 16);
    if (rest.size() < line + 2 + size + 2) {  // a cut chunk: what arrived of it
      seen.body.append(rest.substr(line + 2, std::min(size, rest.size() - line - 2)));
      return seen;
    }
    if (size == 0) {
      seen.complete = rest.substr(line + 2, 2) == "\r\n";
      return seen;
    }
    seen.body.append(rest.substr(line + 2, size));
    rest.remove_prefix(line + 2 + size + 2);
  }
}

std::string chunked(std::string_view body, std::size_t piece) {
  std::string out;
  for (std::size_t i = 0; i < body.size(); i += piece) {
    auto part = body.substr(i, piece);
    std::ostringstream size;
    size << std::hex << part.size();
    out += size.str() + "\r\n" + std::string(part) + "\r\n";
  }
  return out + "0\r\n\r\n";
}

Scenario json_answer() {
  auto body = fixture("chat-completion.json");
  return {"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
          std::to_string(body.size()) + "\r\nx-ratelimit-remaining-tokens: 9000\r\n\r\n" + body};
}

Scenario sse_answer() {
  return {
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
      "\r\n" +
      chunked(fixture("chat-stream-usage.sse"), 300)};
}

Scenario held_429() {
  std::string body = R"({"error":{"code":"429","message":"Rate limit is exceeded."}})";
  return {
      "HTTP/1.1 429 Too Many Requests\r\nretry-after-ms: 1500\r\n"
      "Content-Type: application/json\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body};
}

core::Usage usage_of(const Seen& seen, bool sse) {
  core::Usage usage;
  UsageObserver observer(usage);
  observer.on_head(ResponseHead{200, sse});
  BodyChunk chunk{seen.body, true};
  observer.on_chunk(chunk);
  observer.on_end(BodyEnd::kComplete);
  return usage;
}

bool same_usage(const core::Usage& a, const core::Usage& b) {
  return a.present == b.present && a.prompt == b.prompt && a.completion == b.completion &&
         a.total == b.total && a.cached == b.cached && a.reasoning == b.reasoning;
}

constexpr std::string_view kSseErrorEnd = "data: {\"error\":{\"code\":\"backend_";

TEST(RelayTest, RelaysAJsonAnswerWithItsUsage) {
  auto run = relay_once(json_answer());
  ASSERT_TRUE(run->finished);
  EXPECT_EQ(run->backend_got, kRequest.head + std::string(kRequest.body));
  EXPECT_EQ(run->result.attempt.kind, Kind::kRelayed);
  EXPECT_EQ(run->result.attempt.status, 200);
  EXPECT_EQ(run->result.attempt.signals.remaining_tokens, 9000);
  EXPECT_TRUE(run->result.keep_alive);
  EXPECT_TRUE(run->result.reusable);
  auto seen = parse_answer(run->client_saw);
  EXPECT_TRUE(seen.complete);
  EXPECT_EQ(seen.body, fixture("chat-completion.json"));
  EXPECT_NE(seen.head.find("x-request-id: req-1\r\nx-tollgate-backend: b1\r\n"), std::string::npos);
  EXPECT_EQ(run->ctx.status, 200);
  EXPECT_EQ(run->ctx.usage.total, 42u);
  EXPECT_EQ(run->ctx.bytes_out, run->client_saw.size());
  EXPECT_EQ(run->ctx.outcome, tollgate::pipeline::Outcome::kOk);
}

TEST(RelayTest, RelaysAStreamWithItsUsage) {
  auto s = sse_answer();
  s.count_output = true;
  auto run = relay_once(s);
  ASSERT_TRUE(run->finished);
  EXPECT_EQ(run->result.attempt.kind, Kind::kRelayed);
  EXPECT_TRUE(run->result.reusable);
  auto seen = parse_answer(run->client_saw);
  EXPECT_TRUE(seen.chunked);
  EXPECT_TRUE(seen.complete);
  EXPECT_EQ(seen.body, fixture("chat-stream-usage.sse"));
  EXPECT_EQ(run->ctx.usage.prompt, 19u);
  EXPECT_EQ(run->ctx.usage.total, 26u);
  EXPECT_EQ(run->ctx.output_text, "Hello \"usage\": {not json");
}

TEST(RelayTest, TakesBackTheUsageTheGatewayAskedFor) {
  auto s = sse_answer();
  s.strip_usage = true;
  auto run = relay_once(s);
  ASSERT_TRUE(run->finished);
  auto seen = parse_answer(run->client_saw);
  EXPECT_TRUE(seen.complete);
  EXPECT_EQ(seen.body.find("\"usage\""), std::string::npos);
  EXPECT_NE(seen.body.find("data: [DONE]\n\n"), std::string::npos);
  EXPECT_EQ(run->ctx.usage.total, 26u) << "billed though the client did not see it";
  EXPECT_TRUE(run->result.reusable);
}

TEST(RelayTest, HoldsA429WithoutSendingAnything) {
  auto run = relay_once(held_429());
  ASSERT_TRUE(run->finished);
  const auto& a = run->result.attempt;
  EXPECT_EQ(a.kind, Kind::kHeld);
  EXPECT_EQ(a.status, 429);
  EXPECT_EQ(a.signals.retry_after, std::chrono::milliseconds(1500));
  EXPECT_EQ(a.held.body(), R"({"error":{"code":"429","message":"Rate limit is exceeded."}})");
  EXPECT_EQ(a.held[http::field::content_type], "application/json");
  EXPECT_EQ(a.body_head, a.held.body());
  EXPECT_TRUE(run->client_saw.empty());
  EXPECT_TRUE(run->result.reusable);
  EXPECT_EQ(run->ctx.status, 0) << "nothing was sent";
}

TEST(RelayTest, AHeldAnswerCutShortIsReplacedAndItsConnectionDropped) {
  auto s = held_429();
  s.answer.resize(s.answer.size() - 10);
  auto run = relay_once(s);
  ASSERT_TRUE(run->finished);
  const auto& a = run->result.attempt;
  EXPECT_EQ(a.kind, Kind::kHeld);
  EXPECT_NE(a.held.body().find("incomplete"), std::string::npos);
  EXPECT_FALSE(run->result.reusable);
}

TEST(RelayTest, AStalledStreamEndsWithATimeoutEvent) {
  // The 4th backend read is cancelled by the (fired) deadline.
  beast::test::fail_count fc{4, net::error::operation_aborted};
  auto run = relay_once(sse_answer(), Side::kBackend, &fc, /*deadline_fired=*/true);
  ASSERT_TRUE(run->finished);
  EXPECT_EQ(run->result.attempt.kind, Kind::kRelayed);
  EXPECT_EQ(run->ctx.error, "idle_timeout");
  EXPECT_EQ(
      run->cells.upstream_errors[UpstreamError::kIdleTimeout].value(),
      1u);
  auto seen = parse_answer(run->client_saw);
  EXPECT_TRUE(seen.complete);
  EXPECT_NE(seen.body.find("data: {\"error\":{\"code\":\"backend_timeout\""), std::string::npos);
  EXPECT_TRUE(run->result.keep_alive);
  EXPECT_FALSE(run->result.reusable);
}

TEST(RelayTest, ASilentBackendIsAFirstByteTimeout) {
  beast::test::fail_count fc{2, net::error::operation_aborted};  // the header read
  auto run = relay_once(sse_answer(), Side::kBackend, &fc, /*deadline_fired=*/true);
  ASSERT_TRUE(run->finished);
  EXPECT_EQ(run->result.attempt.kind, Kind::kFailed);
  EXPECT_EQ(run->result.attempt.error, UpstreamError::kFirstByteTimeout);
  EXPECT_FALSE(run->result.attempt.answered);
  EXPECT_TRUE(run->client_saw.empty());
}

// The fail matrix: the n-th I/O operation on one side fails (and every one after it).
void fail_matrix(const Scenario& s, Side side) {
  auto clean = relay_once(s);
  ASSERT_TRUE(clean->finished);
  ASSERT_EQ(clean->ctx.outcome, tollgate::pipeline::Outcome::kOk);
  const bool sse = s.answer.find("text/event-stream") != std::string::npos;
  const bool held = clean->result.attempt.kind == Kind::kHeld;
  bool completed = false;
  for (std::size_t n = 0; n < 64 && !completed; ++n) {
    SCOPED_TRACE(::testing::Message()
                 << (side == Side::kBackend ? "backend" : "client") << " op " << n << " fails");
    beast::test::fail_count fc{n};
    auto run = relay_once(s, side, &fc);
    ASSERT_TRUE(run->finished) << "the relay neither hangs nor throws";
    const auto& r = run->result;
    auto seen = parse_answer(run->client_saw);
    // What was relayed is what gets billed: the usage in what the relay read is in the context
    // (the observers see each piece before it is written), and so is any the client saw.
    auto read = parse_answer(std::string_view(s.answer).substr(0, run->backend_read));
    EXPECT_TRUE(same_usage(run->ctx.usage, usage_of(read, sse)));
    auto relayed = usage_of(seen, sse);
    if (relayed.present) {
      EXPECT_TRUE(same_usage(run->ctx.usage, relayed));
    }
    if (r.attempt.kind == Kind::kFailed) {
      EXPECT_EQ(side, Side::kBackend);
      EXPECT_TRUE(r.attempt.error.has_value());
      EXPECT_TRUE(run->client_saw.empty()) << "failed before the client saw anything";
      EXPECT_FALSE(r.reusable);
      continue;
    }
    if (r.attempt.kind == Kind::kHeld) {
      EXPECT_TRUE(held);
      EXPECT_TRUE(run->client_saw.empty());
      completed = r.reusable;
      if (!completed) {
        EXPECT_NE(r.attempt.held.body().find("incomplete"), std::string::npos);
      }
      continue;
    }
    EXPECT_FALSE(held);
    if (run->ctx.outcome == tollgate::pipeline::Outcome::kOk) {
      completed = true;
      EXPECT_EQ(run->client_saw, clean->client_saw);
      EXPECT_TRUE(r.reusable);
      EXPECT_TRUE(r.keep_alive);
      continue;
    }
    EXPECT_FALSE(r.reusable) << "a broken exchange never returns its connection to the pool";
    if (run->ctx.outcome == tollgate::pipeline::Outcome::kClientGone) {
      EXPECT_EQ(side, Side::kClient);
      EXPECT_FALSE(r.keep_alive);
      continue;
    }
    EXPECT_EQ(run->ctx.outcome, tollgate::pipeline::Outcome::kUpstreamError);
    EXPECT_EQ(side, Side::kBackend);
    if (r.keep_alive) {  // only a stream that ended well-formed, with an error event
      EXPECT_TRUE(sse && seen.chunked && seen.complete);
      EXPECT_NE(seen.body.find(kSseErrorEnd), std::string::npos);
    }
  }
  EXPECT_TRUE(completed) << "64 failure points did not cover the exchange";
}

TEST(RelayFailMatrixTest, JsonAnswerBackendSide) {
  fail_matrix(json_answer(), Side::kBackend);
}
TEST(RelayFailMatrixTest, JsonAnswerClientSide) {
  fail_matrix(json_answer(), Side::kClient);
}
TEST(RelayFailMatrixTest, StreamBackendSide) {
  fail_matrix(sse_answer(), Side::kBackend);
}
TEST(RelayFailMatrixTest, StreamClientSide) {
  fail_matrix(sse_answer(), Side::kClient);
}
TEST(RelayFailMatrixTest, StrippedStreamBackendSide) {
  auto s = sse_answer();
  s.strip_usage = true;
  fail_matrix(s, Side::kBackend);
}
TEST(RelayFailMatrixTest, StrippedStreamClientSide) {
  auto s = sse_answer();
  s.strip_usage = true;
  fail_matrix(s, Side::kClient);
}
TEST(RelayFailMatrixTest, Held429BackendSide) {
  fail_matrix(held_429(), Side::kBackend);
}

}  // namespace

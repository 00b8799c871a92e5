#pragma once
// The mock's request logic: a parsed HTTP request in, a fully rendered reply plan out.
// Plain C++ (no Asio/Beast) so it is cheap to compile and test; server.cpp does the I/O.

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "mock/options.hpp"
#include "mock/state.hpp"
#include "mock/wire.hpp"

namespace tollgate::mock {

/// One request as the session read it. Views stay valid during Handler::handle() only.
struct RequestView {
  std::string_view method;
  std::string_view target;
  std::span<const HeaderField> headers;
  std::string_view body;
  bool keep_alive = true;
  bool http10 = false;
};

/// What the session must do. Everything is rendered; the session only writes bytes and waits.
struct Reply {
  enum class Kind : std::uint8_t {
    Full,    // write head + body
    Stream,  // write head, then each SSE event as its own write (chunked unless HTTP/1.0)
    Hang,    // never answer; keep the connection until the peer closes it or the mock stops
    Close,   // close the connection without answering
  };
  Kind kind = Kind::Full;
  int status = 200;
  std::string head;                        // status line and headers, ending with CRLF CRLF
  std::string body;                        // Full
  StreamPlan stream;                       // Stream
  std::chrono::milliseconds delay{0};      // before the first byte (ttft + fault delay)
  std::chrono::milliseconds pace{0};       // Stream: before each content event but the first
  std::optional<std::size_t> close_after;  // Stream: close after this many content events
  bool chunked = true;                     // Stream: chunked transfer coding
  bool close = false;                      // close the connection after this reply
  bool reset = false;                      // Close / close_after: abort with RST
  bool tracked = false;                    // counted in in_flight: pass to Handler::finish()
};

/// How the session's handling of a reply ended.
enum class Outcome : std::uint8_t {
  Done,         // reply fully written (or Close/Hang carried out)
  ClientGone,   // a write failed or the peer closed before the end
  FaultClosed,  // closed on purpose by close_after_chunks
};

/// Injected time so tests are exact.
struct Clock {
  std::function<std::int64_t()> steady_ms;  // monotonic, for the TPM window
  std::function<std::int64_t()> unix_ms;    // wall clock, for `created` and captures
  static Clock system();
};

/// Per-worker scratch: counters, id randomness, the cached Date header.
/// Owner: one worker thread.
struct WorkerContext {
  explicit WorkerContext(WorkerStats& s, std::uint64_t seed) : stats(s), rng(seed) {}
  WorkerStats& stats;
  std::uint64_t rng;
  std::int64_t date_second = -1;
  std::string date;  // "Sat, 22 Nov 2025 10:00:00 GMT"
};

class Handler {
 public:
  Handler(const Options& options, State& state, Clock clock = Clock::system());

  /// Turns one request into a reply plan. Thread: any worker, with its own WorkerContext.
  /// Never throws for any input (bad JSON, bad headers, bad faults all become 4xx replies).
  Reply handle(const RequestView& req, WorkerContext& w);

  /// Must be called once per handled reply when the session is done with it.
  void finish(const Reply& reply, Outcome outcome, WorkerContext& w) noexcept;

  /// Counts a stream whose head was written.
  void stream_started(WorkerContext& w) noexcept {
    w.stats.streams_started.fetch_add(1, std::memory_order_relaxed);
  }

  const Options& options() const { return options_; }

 private:
  /// POST batches: a batch over a file of this instance, completed at its second read (its
  /// output file is written at once). nullopt when the body names no file of this instance.
  std::optional<std::string> create_batch(std::string_view body, std::int64_t created);
  struct Route;
  struct Ctx;
  Reply inference(const RequestView& req, std::string_view path, std::string_view query,
                  std::int64_t in_flight, WorkerContext& w);
  Reply internal_error(std::string_view what);
  Reply control(const RequestView& req, std::string_view path, std::string_view query,
                WorkerContext& w);

  const Options& options_;
  State& state_;
  Clock clock_;
  std::string session_id_;   // azureml-model-session
  std::string fingerprint_;  // system_fingerprint
};

/// Decodes %XX escapes (invalid escapes are kept as they are). Exposed for tests.
std::string percent_decode(std::string_view s);

}  // namespace tollgate::mock

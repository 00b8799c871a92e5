#pragma once
// Response filters: small objects the relay runs over a relayed answer — its head once, then each
// body chunk, then its end — always in the fixed order of ResponseFilters. Plain C++ (no Beast).
// See docs/design/streaming.md §4.
//
// The interface (the ResponseFilter concept):
//   void on_head(const ResponseHead&)  once, after the backend's header was read and before any
//                                      body byte; the filter decides here whether it is active.
//   void on_chunk(BodyChunk&)          each piece of the body as it was read (any split: an SSE
//                                      event may span pieces), in order.
//   void on_end(BodyEnd)               when the relay stops (it may be called again with
//                                      kClientGone if the very last write fails; must not undo).
// Thread: the worker running the relay; never shared.
// Lifetime: one relay (one attempt on one backend). The filters live in the relay's coroutine
//   frame — no heap object per request — and write their results into sinks handed over at
//   construction (RequestContext fields, the AttemptResult), which outlive them.
// What a filter may change: only the chunk's bytes. It may point `chunk.bytes` at bytes it owns
//   (valid until its next call) to drop or rewrite part of the body; it never changes the head
//   (the client's header is built from the backend's). Changing the length is only sound when
//   the client's framing is chunked (the relay frames each chunk as it writes it).
// Order: observers first (they see the backend's bytes), filters that rewrite bytes last.
// Cost: a filter that is not active costs a branch per chunk; none allocates per chunk unless
//   it rewrites bytes.

#include <concepts>
#include <functional>
#include <cstdint>
#include <string>
#include <string_view>

#include "server/pipeline/request_context.hpp"
#include "tollgate/core/objects.hpp"
#include "tollgate/core/usage.hpp"

namespace tollgate::proxy {

/// What a filter learns of the backend's answer before its body.
struct ResponseHead {
  int status = 0;       // the backend's status
  bool is_sse = false;  // Content-Type text/event-stream
};

/// One piece of the body on its way to the client.
struct BodyChunk {
  std::string_view bytes;  // what goes on (a filter may point it at its own bytes)
  bool last = false;       // the body's last piece: a filter holding bytes back releases them
};

/// How the relay of a body stopped.
enum class BodyEnd : std::uint8_t {
  kComplete,       // the backend's message ended well-formed
  kBackendFailed,  // the backend's connection broke or stalled mid-body
  kClientGone,     // a write to the client failed
};

template <class F>
concept ResponseFilter = requires(F f, const ResponseHead& head, BodyChunk& chunk) {
  { f.on_head(head) } -> std::same_as<void>;
  { f.on_chunk(chunk) } -> std::same_as<void>;
  { f.on_end(BodyEnd::kComplete) } -> std::same_as<void>;
};

/// The backend's token usage: core::StreamObserver for SSE, core::JsonUsageScanner otherwise.
/// Writes the usage seen so far to `sink` at the end, however the body ended (what was relayed
/// is what gets billed).
class UsageObserver {
 public:
  explicit UsageObserver(core::Usage& sink) : sink_(sink) {}
  void on_head(const ResponseHead& head) { sse_ = head.is_sse; }
  void on_chunk(BodyChunk& chunk) {
    if (sse_) {
      stream_.feed(chunk.bytes);
    } else {
      json_.feed(chunk.bytes);
    }
  }
  void on_end(BodyEnd end);
  /// The SSE parse, shared with OutputTextCapture (one scan per stream).
  core::StreamObserver& stream() { return stream_; }

 private:
  core::Usage& sink_;
  core::StreamObserver stream_;
  core::JsonUsageScanner json_;
  bool sse_ = false;
};

/// A stream's generated text, appended to `sink` as events pass, to bill a stream that ends
/// without usage (cut by the backend, the client or a stop). Only the relayed attempt counts:
/// the sink is cleared at the head. Rides on the usage observer's SSE parse instead of scanning
/// the stream a second time. Active for SSE answers when `sink` is not null.
class OutputTextCapture {
 public:
  OutputTextCapture(std::string* sink, core::StreamObserver& parse) : sink_(sink), parse_(parse) {}
  void on_head(const ResponseHead& head);
  void on_chunk(BodyChunk&) {}  // the text arrives through the shared parse
  void on_end(BodyEnd) {}

 private:
  std::string* sink_;
  core::StreamObserver& parse_;
};

/// Affinity: the ids a 2xx answer to a stateful call carries (the object it created, the files a
/// batch wrote: core::answer_ids). JSON: the body is kept (up to kMaxBody; a larger one gives no
/// id) and read once it is complete; SSE: the first event naming an id. Writes `sink` only when
/// it found an id, then calls `notify` (if set) at once: for JSON on the last chunk, before the
/// relay writes it to the client.
class CreatedIdCapture {
 public:
  using Notify = std::function<void(const core::AnswerIds&)>;
  static constexpr std::size_t kMaxBody = 4u << 20;
  CreatedIdCapture(bool wanted, core::AnswerIds& sink, const Notify* notify = nullptr)
      : wanted_(wanted), sink_(sink), notify_(notify) {}
  void on_head(const ResponseHead& head);
  void on_chunk(BodyChunk& chunk) {
    if (!active_) return;
    take(chunk.bytes);
    if (chunk.last && !sse_) read_json();
  }
  void on_end(BodyEnd end);

 private:
  void take(std::string_view bytes);
  void read_json();
  void found();
  bool wanted_;
  core::AnswerIds& sink_;
  const Notify* notify_;
  bool active_ = false;
  bool sse_ = false;
  std::string body_;
  core::SseScanner events_;
};

/// Takes back out of an SSE stream the usage the gateway asked for on the client's behalf
/// (core::UsageStripper): active when the gateway injected include_usage. Rewrites bytes, so
/// it runs last; it holds back an incomplete event until its end (released on the last chunk).
class UsageStripFilter {
 public:
  explicit UsageStripFilter(bool wanted) : wanted_(wanted) {}
  void on_head(const ResponseHead& head) { active_ = wanted_ && head.is_sse; }
  void on_chunk(BodyChunk& chunk);
  void on_end(BodyEnd) {}

 private:
  bool wanted_;
  bool active_ = false;
  core::UsageStripper stripper_;
  std::string out_;  // the bytes of the last chunk, as rewritten
};

static_assert(ResponseFilter<UsageObserver>);
static_assert(ResponseFilter<OutputTextCapture>);
static_assert(ResponseFilter<CreatedIdCapture>);
static_assert(ResponseFilter<UsageStripFilter>);

/// The relay's filters, in their fixed order: usage observer, output text, created id, usage
/// stripper. Reads ctx.count_output and ctx.strip_usage; writes ctx.usage, ctx.output_text and
/// `created_id` (when `capture_id`).
class ResponseFilters {
 public:
  ResponseFilters(pipeline::RequestContext& ctx, bool capture_id, core::AnswerIds& created_id,
                  const CreatedIdCapture::Notify* on_ids = nullptr)
      : usage_(ctx.usage),
        text_(ctx.count_output ? &ctx.output_text : nullptr, usage_.stream()),
        id_(capture_id, created_id, on_ids),
        strip_(ctx.strip_usage) {}
  ResponseFilters(const ResponseFilters&) = delete;
  ResponseFilters& operator=(const ResponseFilters&) = delete;

  void on_head(const ResponseHead& head) {
    usage_.on_head(head);
    text_.on_head(head);
    id_.on_head(head);
    strip_.on_head(head);
  }
  /// Returns the bytes to send for `bytes` (possibly none); valid until the next call.
  std::string_view on_chunk(std::string_view bytes, bool last) {
    BodyChunk chunk{bytes, last};
    usage_.on_chunk(chunk);
    text_.on_chunk(chunk);
    id_.on_chunk(chunk);
    strip_.on_chunk(chunk);
    return chunk.bytes;
  }
  void on_end(BodyEnd end) {
    usage_.on_end(end);
    text_.on_end(end);
    id_.on_end(end);
    strip_.on_end(end);
  }

 private:
  UsageObserver usage_;
  OutputTextCapture text_;
  CreatedIdCapture id_;
  UsageStripFilter strip_;
};

}  // namespace tollgate::proxy

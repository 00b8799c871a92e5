#pragma once
// The relay: one exchange over an established backend connection, in named steps — read head,
// hold answer, client head, pump body, end stream — relaying the answer to the client as it
// arrives, through the response filters (response_filter.hpp). See docs/design/streaming.md.
//
// Templated on both streams and their deadlines so that a test drives it with
// beast::test::stream and a fake deadline (tests/unit/proxy/relay_test.cpp); forwarder.cpp
// instantiates it for PlainStream/TlsStream with proxy::Deadline.
//
// The hot path: one coroutine frame per step and per exchange, none per chunk (the body-read
// step and the client write are plain functions around a single co_await of the I/O operation
// itself); one write per chunk; no allocation per chunk unless a filter rewrites bytes.

#include <array>
#include <boost/asio/write.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <chrono>
#include <cstdio>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>

#include "proxy/forwarder.hpp"
#include "proxy/response_filter.hpp"
#include "tollgate/core/errors.hpp"
#include "tollgate/metrics/stats.hpp"
#include "tollgate/routing/backend_state.hpp"
#include "tollgate/routing/signals.hpp"

namespace tollgate::proxy {

/// The backend side of a relay: its stream, its read buffer (read-ahead past the header stays
/// there for the body) and its I/O deadline.
template <class Stream, IoDeadline D = Deadline>
struct Upstream {
  Stream& stream;
  beast::flat_buffer& buffer;
  D& deadline;
};

/// The request to the backend: header serialized by hand into one buffer (cheaper than Beast's
/// per-field buffer sequence), the body sent from the client's buffer without a copy.
struct UpRequest {
  std::string head;
  std::string_view body;
};

/// The relay's time limits and names (from the backend's config and the server's limits).
struct RelaySettings {
  std::chrono::milliseconds first_byte{60'000};           // request written and header read
  std::chrono::milliseconds idle_between_chunks{30'000};  // each read of the body
  std::chrono::milliseconds client_write{60'000};         // each write to the client
  std::string_view backend_name;                          // x-tollgate-backend
};

/// One exchange to relay. References must outlive the relay.
struct RelayJob {
  const UpRequest& request;
  http::verb method;  // the client's (HEAD: no body)
  unsigned version;   // the client's HTTP version (10: a body without length is close-delimited)
  bool keep_alive;    // the client's connection may stay open, so far
  AttemptOptions options;
  RelaySettings settings;
  metrics::RouteCells& cells;    // counts failures once the client saw the answer
  routing::BackendState* state;  // learns the capacity signals at once (null: none)
};

/// How a relay ended.
struct RelayResult {
  AttemptResult attempt;    // kRelayed or kHeld; kFailed: nothing reached the client, `error`
                            // says why (not counted: the caller counts or retries)
  bool keep_alive = false;  // the client's connection may stay open
  bool reusable = false;    // the backend's connection may go back to its pool
};

/// Relays one exchange: writes job.request to `up`, reads the answer and, unless it is held
/// back (a 429 always; a retryable status when job.options.hold_retryable) or fails before the
/// client saw anything, relays it to `down` as it arrives. Sets ctx.ttfb_us, upstream_status,
/// status, usage, output_text, bytes_out, and outcome/error when the relay fails after the
/// client saw the answer. Thread: the worker owning both streams. Never throws on I/O errors.
template <class Down, IoDeadline DownDeadline, class Up, IoDeadline UpDeadline>
net::awaitable<RelayResult> relay(Client<Down, DownDeadline> down, Upstream<Up, UpDeadline> up,
                                  const RelayJob& job, pipeline::RequestContext& ctx);

namespace relay_detail {

using metrics::UpstreamError;

inline constexpr std::size_t kBuffer = 16 * 1024;  // one piece of the body
inline constexpr std::size_t kMaxHeader = 64 * 1024;
inline constexpr std::size_t kMaxHeldBody = 1u << 20;  // a larger held body is replaced
inline constexpr std::size_t kHeldBodyHead = 4096;     // kept for retry hints

// The statuses the gateway retries elsewhere (Azure's throttling, timeouts, server errors).
inline bool retryable_status(int status) {
  return status == 408 || status == 429 || status == 500 || status == 502 || status == 503 ||
         status == 504;
}

/// The reason a read of the backend's answer failed. `expired`: our deadline cancelled it.
inline UpstreamError read_error(const boost::system::error_code& ec, bool expired,
                                UpstreamError on_timeout) {
  if (ec == net::error::operation_aborted && expired) return on_timeout;
  if (ec == http::error::end_of_stream || ec == http::error::partial_message ||
      ec == net::error::eof || ec == net::error::connection_reset ||
      ec == net::ssl::error::stream_truncated) {
    return UpstreamError::kReset;
  }
  return UpstreamError::kProtocol;
}

inline std::string sse_error_event(std::string_view code, std::string_view message) {
  core::HttpError e{502, std::string(code), std::string(message), "server_error", {}};
  return "data: " + e.body() + "\n\n";
}

/// How the client's body is framed.
struct Framing {
  std::optional<std::uint64_t> length;  // the backend's Content-Length, kept
  bool chunked = false;                 // re-chunked (no length, HTTP/1.1 client)
  bool keep_alive = true;
  unsigned version = 11;  // the client's
};

/// The client's response header, serialized by hand: one contiguous buffer is much cheaper to
/// build and write than Beast's per-field buffer sequence (a third of the relay's CPU).
inline std::string client_head(const http::response_header<>& uh, const pipeline::RequestContext& ctx,
                               std::string_view backend_name, const Framing& f) {
  std::string head;
  head.reserve(1024);
  head += "HTTP/1.1 ";
  head += std::to_string(ctx.upstream_status);
  head += ' ';
  auto reason = uh.reason();
  if (reason.empty()) reason = http::obsolete_reason(static_cast<http::status>(uh.result_int()));
  head.append(reason.data(), reason.size());
  head += "\r\n";
  for (const auto& field : uh) {
    auto name = field.name_string();
    if (drop_response_header(uh, name)) continue;
    if (!ctx.response_headers.empty() && name.size() > 12 &&
        beast::iequals(name.substr(0, 12), "x-ratelimit-")) {
      continue;  // the backend's quota is not the client's
    }
    auto value = field.value();
    head.append(name.data(), name.size());
    head += ": ";
    head.append(value.data(), value.size());
    head += "\r\n";
  }
  head += "x-request-id: ";
  head += ctx.request_id;
  head += "\r\nx-tollgate-backend: ";
  head += backend_name;
  head += "\r\n";
  head += ctx.response_headers;  // the client's own x-ratelimit-* (the backend's were dropped)
  if (f.length) {
    head += "Content-Length: ";
    head += std::to_string(*f.length);
    head += "\r\n";
  } else if (f.chunked) {
    head += "Transfer-Encoding: chunked\r\n";
  }
  if (!f.keep_alive) {
    head += "Connection: close\r\n";
  } else if (f.version < 11) {
    head += "Connection: keep-alive\r\n";
  }
  head += "\r\n";
  return head;
}

/// A held answer, ready to send: the backend's status and headers (filtered) and its body, or
/// when the body was cut short an error saying so (a truncated body is never sent).
inline void fill_held(http::response<http::string_body>& res, const http::response_header<>& uh,
                      std::string body, bool complete) {
  res.result(uh.result_int());
  res.reason(uh.reason());
  for (const auto& f : uh) {
    if (!drop_response_header(uh, f.name_string())) res.insert(f.name_string(), f.value());
  }
  if (!complete) {
    int status = static_cast<int>(uh.result_int());
    res.erase(http::field::content_type);
    res.set(http::field::content_type, "application/json");
    core::HttpError e{
        status, std::to_string(status), "the backend's error response was incomplete", {}, {}};
    body = e.body();
  }
  res.body() = std::move(body);
}

using IoResult = std::tuple<boost::system::error_code, std::size_t>;

/// The state of one relay, and its steps. Lives in relay()'s coroutine frame.
template <class Down, class DownDeadline, class Up, class UpDeadline>
class Relay {
 public:
  Relay(Client<Down, DownDeadline> down, Upstream<Up, UpDeadline> up, const RelayJob& job,
        pipeline::RequestContext& ctx)
      : down_(down),
        up_(up),
        job_(job),
        ctx_(ctx),
        filters_(ctx, job.options.capture_id, result_.attempt.created_id, &job.options.on_ids) {
    result_.keep_alive = job.keep_alive;
    parser_.body_limit(boost::none);
    parser_.header_limit(kMaxHeader);
    if (job.method == http::verb::head) parser_.skip(true);
  }
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  /// Read head: writes the request, reads the backend's header and learns its capacity signals.
  /// False when that failed (the result is kFailed).
  net::awaitable<bool> read_head() {
    up_.deadline.after(job_.settings.first_byte);
    const auto& rq = job_.request;
    std::array<net::const_buffer, 2> bufs{net::buffer(rq.head),
                                          net::buffer(rq.body.data(), rq.body.size())};
    auto [wec, wn] = co_await net::async_write(up_.stream, bufs, use_tuple);
    if (wec) {
      bool timeout = wec == net::error::operation_aborted && up_.deadline.expired();
      co_return fail(timeout ? UpstreamError::kFirstByteTimeout : UpstreamError::kWrite);
    }
    auto [hec, hn] = co_await http::async_read_header(up_.stream, up_.buffer, parser_, use_tuple);
    if (hec) {
      co_return fail(read_error(hec, up_.deadline.expired(), UpstreamError::kFirstByteTimeout));
    }
    learn_head();
    co_return true;
  }

  /// A 429 is always held: when every backend turns out throttled, the gateway answers with the
  /// earliest recovery instead of this backend's own wait.
  bool should_hold() const {
    int status = result_.attempt.status;
    return status == 429 || (job_.options.hold_retryable && retryable_status(status));
  }

  /// Hold answer: reads the whole (small) answer without sending anything: the caller may retry
  /// on another backend, or send it as it is.
  net::awaitable<void> hold_answer() {
    std::string body;
    bool complete = true;
    while (!parser_.is_done()) {
      auto piece = buffered_piece();
      if (piece.need_read) piece = read_done(co_await read_more());
      body.append(buf_.data(), piece.size);
      if (piece.error || body.size() > kMaxHeldBody) {
        complete = false;
        break;
      }
    }
    up_.deadline.never();
    auto& a = result_.attempt;
    a.body_head = body.substr(0, kHeldBodyHead);
    fill_held(a.held, parser_.get(), std::move(body), complete);
    a.kind = AttemptResult::Kind::kHeld;
    result_.reusable = complete && parser_.keep_alive();
  }

  /// Client head: the client's header and body framing; the filters see the head.
  void client_head() {
    ctx_.status = ctx_.upstream_status;
    const auto& uh = parser_.get();
    int status = ctx_.upstream_status;
    bool has_body =
        !(job_.method == http::verb::head || status == 204 || status == 304 || status / 100 == 1);
    Framing f;
    if (auto length = parser_.content_length()) f.length = *length;
    if (!f.length && has_body) {
      if (job_.version >= 11) {
        chunked_ = true;
      } else {
        result_.keep_alive = false;  // HTTP/1.0 client: the body ends when the connection closes
      }
    }
    f.chunked = chunked_;
    f.keep_alive = result_.keep_alive;
    f.version = job_.version;
    head_ = relay_detail::client_head(uh, ctx_, job_.settings.backend_name, f);
    auto type = uh[http::field::content_type];
    is_sse_ = type.size() >= 17 && beast::iequals(type.substr(0, 17), "text/event-stream");
    filters_.on_head(ResponseHead{status, is_sse_});
  }

  /// Pump body: reads each piece, runs the filters over it and writes what they give (one
  /// write per piece, the header with the first). Returns false when the client is gone.
  net::awaitable<bool> pump_body() {
    result_.attempt.kind = AttemptResult::Kind::kRelayed;
    up_.deadline.never();
    // A stream's header goes out at once (the client sees the response start); a JSON answer's
    // header waits for its first body bytes so both leave in one write.
    if (is_sse_ || parser_.is_done()) {
      if (!sent(co_await send(nullptr, 0, !parser_.is_done()))) co_return client_gone();
    }
    while (!parser_.is_done()) {
      auto piece = buffered_piece();
      if (piece.need_read) piece = read_done(co_await read_more());
      broke_ = piece.error;
      if (piece.size == 0) {
        if (broke_) break;
        continue;
      }
      bool more = broke_ || !parser_.is_done();
      auto out = filters_.on_chunk(std::string_view(buf_.data(), piece.size), !more);
      if (!out.empty() || !more) {
        if (!sent(co_await send(out.data(), out.size(), more))) co_return client_gone();
      }
      if (broke_) break;
    }
    up_.deadline.never();
    co_return true;
  }

  /// End stream: the last chunk; or after a backend failure, an SSE error event (the stream ends
  /// well-formed) or closing the client's connection. Decides whether the backend's connection
  /// may be reused.
  net::awaitable<void> end_stream() {
    filters_.on_end(broke_ ? BodyEnd::kBackendFailed : BodyEnd::kComplete);
    if (broke_ && !header_sent_) {
      // The backend failed after its header but before the client saw anything: the caller
      // answers with a gateway error (never a retry: the backend already answered).
      fail(*broke_);
      co_return;
    }
    if (broke_) {
      job_.cells.upstream_errors[*broke_].add();
      ctx_.outcome = pipeline::Outcome::kUpstreamError;
      ctx_.error = metrics::to_string(*broke_);
      if (is_sse_ && chunked_) {
        // An error event the SDKs raise as APIError, then the last chunk. The client's
        // connection stays usable (its framing is intact); closing it here would race the
        // client's next request on a connection it believes is kept alive.
        auto event = sse_error_event(
            *broke_ == UpstreamError::kIdleTimeout ? "backend_timeout" : "backend_disconnected",
            "the backend stopped the stream before it ended");
        if (!sent(co_await send(event.data(), event.size(), false))) result_.keep_alive = false;
      } else {
        result_.keep_alive = false;  // the client's message cannot be ended properly: close
      }
      co_return;
    }
    if (!finished_ && !sent(co_await send(nullptr, 0, false))) {
      client_gone();
      co_return;
    }
    result_.reusable = parser_.keep_alive();
  }

  RelayResult take_result() { return std::move(result_); }

 private:
  /// One piece of the body, in buf_.
  struct Piece {
    std::size_t size = 0;
    std::optional<UpstreamError> error;  // the read that ended the body
    bool need_read = false;              // nothing complete was buffered: read the socket
  };

  // The body-read step, used by hold and pump alike, in plain halves around one co_await of the
  // read itself (a coroutine per piece would cost a frame per chunk):
  //   auto piece = buffered_piece();
  //   if (piece.need_read) piece = read_done(co_await read_more());
  // Body bytes that came with the header are parsed in place; the socket is read only when the
  // buffer holds no complete piece (put() consumes nothing until it has one).
  Piece buffered_piece() {
    auto& body = parser_.get().body();
    body.data = buf_.data();
    body.size = buf_.size();
    boost::system::error_code ec;
    std::size_t used = up_.buffer.size() > 0 ? parse_buffered(parser_, up_.buffer, ec) : 0;
    if (used == 0 && !ec) return Piece{.need_read = true};
    return piece(ec);
  }
  auto read_more() {
    up_.deadline.after(job_.settings.idle_between_chunks);
    return http::async_read_some(up_.stream, up_.buffer, parser_, use_tuple);
  }
  Piece read_done(const IoResult& r) {
    const auto& ec = std::get<0>(r);
    return piece(ec == http::error::need_buffer ? boost::system::error_code{} : ec);
  }
  Piece piece(const boost::system::error_code& ec) {
    Piece p;
    p.size = buf_.size() - parser_.get().body().size;
    if (ec) p.error = read_error(ec, up_.deadline.expired(), UpstreamError::kIdleTimeout);
    return p;
  }

  // Frames `data` (as a chunk when chunked), preceded by the header the first time and followed
  // by the last chunk when `more` is false, and starts one write. Not a coroutine: it returns the
  // write's own awaitable, whose result goes to sent().
  auto send(const char* data, std::size_t size, bool more) {
    static constexpr std::string_view kCrlf = "\r\n";
    static constexpr std::string_view kLastChunk = "0\r\n\r\n";
    std::size_t count = 0;
    if (!header_sent_) out_[count++] = net::buffer(head_);
    if (size > 0) {
      if (chunked_) {
        int n = std::snprintf(size_line_.data(), size_line_.size(), "%zx\r\n", size);
        out_[count++] = net::buffer(size_line_.data(), static_cast<std::size_t>(n));
      }
      out_[count++] = net::buffer(data, size);
      if (chunked_) out_[count++] = net::buffer(kCrlf.data(), kCrlf.size());
    }
    if (!more && chunked_) out_[count++] = net::buffer(kLastChunk.data(), kLastChunk.size());
    sending_last_ = !more;
    down_.deadline.after(job_.settings.client_write);
    return net::async_write(down_.stream, std::span<const net::const_buffer>(out_.data(), count),
                            use_tuple);
  }
  /// False when the client is gone.
  bool sent(const IoResult& r) {
    ctx_.bytes_out += std::get<1>(r);
    if (std::get<0>(r)) return false;
    header_sent_ = true;
    if (sending_last_) finished_ = true;
    return true;
  }

  /// The client went away: counted, the connection closes, the usage seen so far is billed.
  bool client_gone() {
    ctx_.outcome = pipeline::Outcome::kClientGone;
    ctx_.error = "client_gone";
    job_.cells.upstream_errors[UpstreamError::kClientGone].add();
    result_.keep_alive = false;
    filters_.on_end(BodyEnd::kClientGone);
    return false;
  }

  bool fail(UpstreamError reason) {
    result_.attempt.kind = AttemptResult::Kind::kFailed;
    result_.attempt.error = reason;
    return false;
  }

  void learn_head() {
    ctx_.ttfb_us = core::micros_since(ctx_.start);
    const auto& uh = parser_.get();
    ctx_.upstream_status = static_cast<int>(uh.result_int());
    auto& a = result_.attempt;
    a.status = ctx_.upstream_status;
    a.answered = true;
    a.signals = routing::read_signals(
        [&uh](std::string_view name) { return std::string_view(uh[name]); }, core::unix_now_ms());
    // The capacity model learns at once, not when a long stream ends.
    if (job_.state != nullptr) job_.state->observe(a.signals, routing::steady_now_ms());
  }

  Client<Down, DownDeadline> down_;
  Upstream<Up, UpDeadline> up_;
  const RelayJob& job_;
  pipeline::RequestContext& ctx_;
  RelayResult result_;  // before filters_, which write into it
  ResponseFilters filters_;
  http::response_parser<http::buffer_body> parser_;
  std::string head_;  // the client's header
  bool chunked_ = false;
  bool is_sse_ = false;
  bool header_sent_ = false;
  bool sending_last_ = false;
  bool finished_ = false;  // the message end went out
  std::optional<UpstreamError> broke_;
  std::array<net::const_buffer, 5> out_;
  std::array<char, 24> size_line_{};
  std::array<char, kBuffer> buf_;
};

}  // namespace relay_detail

template <class Down, IoDeadline DownDeadline, class Up, IoDeadline UpDeadline>
net::awaitable<RelayResult> relay(Client<Down, DownDeadline> down, Upstream<Up, UpDeadline> up,
                                  const RelayJob& job, pipeline::RequestContext& ctx) {
  relay_detail::Relay<Down, DownDeadline, Up, UpDeadline> r(down, up, job, ctx);
  if (co_await r.read_head()) {
    if (r.should_hold()) {
      co_await r.hold_answer();
    } else {
      r.client_head();
      if (co_await r.pump_body()) co_await r.end_stream();
    }
  }
  co_return r.take_result();
}

}  // namespace tollgate::proxy

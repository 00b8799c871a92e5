#include "proxy/forwarder.hpp"

#include <openssl/ssl.h>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <span>

#include "proxy/upstream_pool.hpp"
#include "tollgate/core/api_call.hpp"
#include "tollgate/routing/affinity.hpp"

namespace tollgate::proxy {

using metrics::UpstreamError;
using namespace std::chrono_literals;

bool is_hop_by_hop(std::string_view name) {
  static constexpr std::string_view kNames[] = {
      "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
      "upgrade", "proxy-authorization", "proxy-authenticate"};
  for (auto n : kNames) {
    if (beast::iequals(name, n)) return true;
  }
  return false;
}

namespace {
bool drop_request_header_impl(const http::fields& f, std::string_view name);
bool drop_response_header_impl(const http::fields& f, std::string_view name);
}  // namespace

bool drop_request_header(const http::fields& fields, std::string_view name) {
  return drop_request_header_impl(fields, name);
}
bool drop_response_header(const http::fields& fields, std::string_view name) {
  return drop_response_header_impl(fields, name);
}

namespace {

constexpr std::size_t kRelayBuffer = 16 * 1024;
constexpr std::size_t kMaxHeldBody = 1u << 20;     // a retryable error body larger than this is replaced
constexpr std::size_t kMaxCapturedBody = 4u << 20; // a created object's JSON, for its id

std::int64_t unix_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The statuses the gateway retries on another backend (Azure's throttling, timeouts, server errors).
bool retryable_status(int status) {
  return status == 408 || status == 429 || status == 500 || status == 502 || status == 503 ||
         status == 504;
}

std::int64_t micros_since(SteadyClock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(SteadyClock::now() - t).count();
}

bool listed_in_connection(const http::fields& f, std::string_view name) {
  auto it = f.find(http::field::connection);
  if (it == f.end()) return false;
  for (auto token : http::token_list(it->value())) {
    if (beast::iequals(token, name)) return true;
  }
  return false;
}

bool drop_request_header_impl(const http::fields& f, std::string_view name) {
  static constexpr std::string_view kDrop[] = {"host", "content-length", "api-key", "authorization",
                                               "expect", "x-request-id"};
  if (is_hop_by_hop(name)) return true;
  for (auto n : kDrop) {
    if (beast::iequals(name, n)) return true;
  }
  // The gateway's own control headers (pinning, priority) are for the gateway only.
  constexpr std::string_view kOwn = "x-tollgate-";
  if (name.size() >= kOwn.size() && beast::iequals(name.substr(0, kOwn.size()), kOwn)) return true;
  return listed_in_connection(f, name);
}

bool drop_response_header_impl(const http::fields& f, std::string_view name) {
  static constexpr std::string_view kDrop[] = {"content-length", "x-request-id", "x-tollgate-backend"};
  if (is_hop_by_hop(name)) return true;
  for (auto n : kDrop) {
    if (beast::iequals(name, n)) return true;
  }
  return listed_in_connection(f, name);
}

struct Failure {
  UpstreamError reason;
  int status;  // status for the client when nothing was sent yet
  std::string_view code;
  std::string_view message;
};

Failure failure(UpstreamError reason) {
  switch (reason) {
    case UpstreamError::kConnectTimeout:
    case UpstreamError::kFirstByteTimeout:
    case UpstreamError::kIdleTimeout:
      return {reason, 504, "backend_timeout", "the backend did not answer in time"};
    case UpstreamError::kCredential:
      return {reason, 502, "backend_credential_unavailable",
              "the gateway has no valid token for the backend"};
    default:
      return {reason, 502, "backend_unavailable", "the backend could not be reached or failed"};
  }
}

bool timed_out(const boost::system::error_code& ec) {
  return ec == beast::error::timeout || ec == net::error::timed_out;
}

// Opens a new connection (TCP, then TLS with SNI and host name verification).
net::awaitable<std::unique_ptr<UpstreamConn>> connect(server::Worker& worker,
                                                      const server::BackendRuntime& b,
                                                      UpstreamPool& pool,
                                                      std::optional<UpstreamError>& err) {
  const auto& cfg = *b.config;
  auto ex = co_await net::this_coro::executor;
  auto now = SteadyClock::now();
  if (!pool.resolved || now - pool.resolved_at > 30s) {
    tcp::resolver resolver(ex);
    auto [ec, results] = co_await resolver.async_resolve(cfg.endpoint.host,
                                                         std::to_string(cfg.endpoint.port), use_tuple);
    if (ec || results.empty()) {
      err = UpstreamError::kResolve;
      co_return nullptr;
    }
    pool.resolved = results;
    pool.resolved_at = now;
  }
  PlainStream tcp_stream(ex);
  tcp_stream.expires_after(cfg.timeouts.connect);
  auto [cec, ep] = co_await tcp_stream.async_connect(*pool.resolved, use_tuple);
  if (cec) {
    pool.resolved.reset();
    err = timed_out(cec) ? UpstreamError::kConnectTimeout : UpstreamError::kConnect;
    co_return nullptr;
  }
  tcp_stream.expires_never();
  tcp_stream.socket().set_option(tcp::no_delay(true));
  worker.stats().upstream_connects.add();
  if (!b.tls) {
    auto conn = std::make_unique<UpstreamConn>(std::in_place_type<PlainStream>, std::move(tcp_stream));
    conn->deadline = std::make_unique<Deadline>(conn->lowest().socket());
    co_return conn;
  }
  auto conn = std::make_unique<UpstreamConn>(std::in_place_type<TlsStream>, std::move(tcp_stream),
                                             *b.tls);
  auto& tls = std::get<TlsStream>(conn->stream);
  boost::system::error_code addr_ec;
  net::ip::make_address(cfg.endpoint.host, addr_ec);
  if (addr_ec) {  // SNI only for names, not IP literals
    SSL_set_tlsext_host_name(tls.native_handle(), cfg.endpoint.host.c_str());
  }
  tls.set_verify_mode(net::ssl::verify_peer);
  tls.set_verify_callback(net::ssl::host_name_verification(cfg.endpoint.host));
  beast::get_lowest_layer(tls).expires_after(cfg.timeouts.connect);
  auto [hec] = co_await tls.async_handshake(net::ssl::stream_base::client, use_tuple);
  if (hec) {
    err = timed_out(hec) ? UpstreamError::kConnectTimeout : UpstreamError::kTls;
    co_return nullptr;
  }
  beast::get_lowest_layer(tls).expires_never();
  conn->deadline = std::make_unique<Deadline>(conn->lowest().socket());
  co_return conn;
}

// The request to the backend: header serialized by hand into one buffer (cheaper than Beast's
// per-field buffer sequence), the body sent from the client's buffer without a copy.
struct UpRequest {
  std::string head;
  std::string_view body;
};

UpRequest build_upstream_request(const Request& req, std::string_view body,
                                 const core::RequestContext& ctx,
                                 const config::BackendConfig& cfg, const std::string* bearer) {
  UpRequest up;
  auto& h = up.head;
  h.reserve(1024 + cfg.api_key.size() + (bearer ? bearer->size() : 0));
  auto method = req.method_string();
  h.append(method.data(), method.size());
  h += ' ';
  h += core::upstream_target(ctx.call, cfg);
  h += " HTTP/1.1\r\nHost: ";
  h += cfg.endpoint.host_header;
  if (bearer != nullptr) {  // an Entra ID token the gateway obtained for this backend
    h += "\r\nAuthorization: Bearer ";
    h += *bearer;
  } else {
    h += "\r\napi-key: ";
    h += cfg.api_key;
  }
  h += "\r\nx-request-id: ";
  h += ctx.request_id;
  h += "\r\n";
  for (const auto& f : req) {
    auto name = f.name_string();
    if (drop_request_header_impl(req, name)) continue;
    if (!ctx.drop_header.empty() && beast::iequals(name, ctx.drop_header)) continue;
    auto value = f.value();
    h.append(name.data(), name.size());
    h += ": ";
    h.append(value.data(), value.size());
    h += "\r\n";
  }
  if (!body.empty() || req.method() == http::verb::post || req.method() == http::verb::put ||
      req.method() == http::verb::patch) {
    h += "Content-Length: ";
    h += std::to_string(body.size());
    h += "\r\n";
  }
  h += "\r\n";
  up.body = body;
  return up;
}

std::string sse_error_event(std::string_view code, std::string_view message) {
  core::HttpError e{502, std::string(code), std::string(message), "server_error", {}};
  return "data: " + e.body() + "\n\n";
}

// Relays one exchange over an established connection. Returns nullopt when the exchange
// completed (whatever the status), or the failure that happened before anything reached the
// client (so the caller may answer with an error or retry on a fresh connection).
template <class Down, class Up>
net::awaitable<std::optional<UpstreamError>> relay(Client<Down> down, Up& up, UpstreamConn& conn,
                                                   const UpRequest& upreq, const Request& req,
                                                   core::RequestContext& ctx,
                                                   server::Worker& worker,
                                                   const config::BackendConfig& cfg,
                                                   bool& keep_alive, bool& reusable,
                                                   bool& response_started,
                                                   const AttemptOptions& opts, AttemptResult& out,
                                                   routing::BackendState* state) {
  reusable = false;
  auto& deadline = *conn.deadline;
  auto timed_out = [&](const boost::system::error_code& ec) {
    return ec == net::error::operation_aborted && deadline.expired();
  };
  deadline.after(cfg.timeouts.first_byte);
  std::array<net::const_buffer, 2> request_bufs{net::buffer(upreq.head),
                                                 net::buffer(upreq.body.data(), upreq.body.size())};
  auto [wec, wn] = co_await net::async_write(up, request_bufs, use_tuple);
  if (wec) co_return timed_out(wec) ? UpstreamError::kFirstByteTimeout : UpstreamError::kWrite;

  http::response_parser<http::buffer_body> parser;
  parser.body_limit(boost::none);
  parser.header_limit(64 * 1024);
  if (req.method() == http::verb::head) parser.skip(true);
  auto [hec, hn] = co_await http::async_read_header(up, conn.buffer, parser, use_tuple);
  if (hec) {
    if (timed_out(hec)) co_return UpstreamError::kFirstByteTimeout;
    if (hec == http::error::end_of_stream || hec == net::error::eof ||
        hec == net::error::connection_reset || hec == net::ssl::error::stream_truncated) {
      co_return UpstreamError::kReset;
    }
    co_return UpstreamError::kProtocol;
  }
  ctx.ttfb_us = micros_since(ctx.start);
  const auto& uh = parser.get();
  ctx.upstream_status = static_cast<int>(uh.result_int());
  out.status = ctx.upstream_status;
  out.signals = routing::read_signals(
      [&uh](std::string_view name) { return std::string_view(uh[name]); }, unix_now_ms());
  // The capacity model learns at once, not when a long stream ends.
  if (state != nullptr) state->observe(out.signals, routing::steady_now_ms());

  // A 429 is always held: when every backend turns out throttled, the gateway answers with the
  // earliest recovery instead of this backend's own wait.
  if ((opts.hold_retryable && retryable_status(out.status)) || out.status == 429) {
    // Read the whole (small) error answer without sending anything: the caller may retry on
    // another backend, or send it as it is.
    response_started = true;
    std::string held_body;
    std::array<char, kRelayBuffer> hbuf;
    bool complete = true;
    while (!parser.is_done()) {
      // As in the relay loop below (not a shared coroutine: a nested frame per piece costs).
      parser.get().body().data = hbuf.data();
      parser.get().body().size = hbuf.size();
      boost::system::error_code rec;
      std::size_t used = conn.buffer.size() > 0 ? parse_buffered(parser, conn.buffer, rec) : 0;
      if (used == 0 && !rec) {
        deadline.after(cfg.timeouts.idle_between_chunks);
        auto [ec, rn] = co_await http::async_read_some(up, conn.buffer, parser, use_tuple);
        rec = ec == http::error::need_buffer ? boost::system::error_code{} : ec;
      }
      held_body.append(hbuf.data(), hbuf.size() - parser.get().body().size);
      if (rec || held_body.size() > kMaxHeldBody) {
        complete = false;
        break;
      }
    }
    deadline.never();
    auto& res = out.held;
    res.result(uh.result_int());
    res.reason(uh.reason());
    for (const auto& f : uh) {
      if (!drop_response_header_impl(uh, f.name_string())) res.insert(f.name_string(), f.value());
    }
    out.body_head = held_body.substr(0, 4096);
    if (!complete) {  // never send a truncated body: say what happened instead
      res.erase(http::field::content_type);
      res.set(http::field::content_type, "application/json");
      held_body = core::HttpError{out.status, std::to_string(out.status),
                                  "the backend's error response was incomplete", {}, {}}
                      .body();
    }
    res.body() = std::move(held_body);
    out.kind = AttemptResult::Kind::kHeld;
    reusable = complete && parser.keep_alive();
    co_return std::nullopt;
  }
  ctx.status = ctx.upstream_status;

  // The client's response header, serialized by hand: one contiguous buffer is much cheaper to
  // build and write than Beast's per-field buffer sequence (a third of the relay's CPU).
  bool has_body = !(req.method() == http::verb::head || ctx.upstream_status == 204 ||
                    ctx.upstream_status == 304 || ctx.upstream_status / 100 == 1);
  bool chunked = false;
  auto length = parser.content_length();
  if (!length && has_body) {
    if (req.version() >= 11) {
      chunked = true;
    } else {
      keep_alive = false;  // HTTP/1.0 client: the body ends when the connection closes
    }
  }
  std::string head;
  head.reserve(1024);
  head += "HTTP/1.1 ";
  head += std::to_string(ctx.upstream_status);
  head += ' ';
  auto reason = uh.reason();
  if (reason.empty()) reason = http::obsolete_reason(static_cast<http::status>(uh.result_int()));
  head.append(reason.data(), reason.size());
  head += "\r\n";
  for (const auto& f : uh) {
    auto name = f.name_string();
    if (drop_response_header_impl(uh, name)) continue;
    if (!ctx.response_headers.empty() && name.size() > 12 &&
        beast::iequals(name.substr(0, 12), "x-ratelimit-")) {
      continue;  // the backend's quota is not the client's
    }
    auto value = f.value();
    head.append(name.data(), name.size());
    head += ": ";
    head.append(value.data(), value.size());
    head += "\r\n";
  }
  head += "x-request-id: ";
  head += ctx.request_id;
  head += "\r\nx-tollgate-backend: ";
  head += cfg.name;
  head += "\r\n";
  head += ctx.response_headers;  // the client's own x-ratelimit-* (the backend's were dropped)
  if (length) {
    head += "Content-Length: ";
    head += std::to_string(*length);
    head += "\r\n";
  } else if (chunked) {
    head += "Transfer-Encoding: chunked\r\n";
  }
  if (!keep_alive) {
    head += "Connection: close\r\n";
  } else if (req.version() < 11) {
    head += "Connection: keep-alive\r\n";
  }
  head += "\r\n";

  auto content_type = uh[http::field::content_type];
  bool is_sse = content_type.size() >= 17 && beast::iequals(content_type.substr(0, 17),
                                                             "text/event-stream");
  core::StreamObserver sse;
  if (ctx.count_output && is_sse) {
    ctx.output_text.clear();  // only the attempt that is relayed counts
    sse.capture_output(&ctx.output_text);
  }
  std::optional<core::UsageStripper> stripper;
  if (ctx.strip_usage && is_sse) stripper.emplace();
  core::JsonUsageScanner json;
  // Affinity: the id of the object a stateful call created (JSON: the body, kept up to a bound;
  // SSE: the first event naming one).
  bool capture = opts.capture_id && out.status / 100 == 2;
  std::string captured;
  core::SseScanner id_events;
  auto capture_bytes = [&](std::string_view chunk) {
    if (!capture) return;
    if (is_sse) {
      id_events.feed(chunk, [&](std::string_view data) {
        if (out.created_id.empty()) out.created_id = routing::created_id(data);
      });
      capture = out.created_id.empty();
    } else if (captured.size() + chunk.size() <= kMaxCapturedBody) {
      captured.append(chunk);
    } else {
      capture = false;
      captured.clear();
    }
  };

  response_started = true;
  deadline.never();
  const auto idle = worker.snapshot()->config->server.limits.idle_timeout;
  auto& route = worker.stats().route(ctx.series);
  auto client_gone = [&] {
    ctx.outcome = "client_gone";
    ctx.error = "client_gone";
    route.upstream_errors[UpstreamError::kClientGone].add();
    keep_alive = false;
    // What was relayed is what gets billed: the usage seen so far, else the text relayed.
    ctx.usage = is_sse ? sse.usage() : json.usage();
  };
  // Writes `data` (framed as a chunk when chunked), preceded by the header the first time and
  // followed by the last chunk when `more` is false: one write call. Returns false if the
  // client is gone. `finished` becomes true once the message end went out.
  bool finished = false;
  bool header_sent = false;
  auto send = [&](const char* data, std::size_t size, bool more) -> net::awaitable<bool> {
    static constexpr std::string_view kCrlf = "\r\n";
    static constexpr std::string_view kLastChunk = "0\r\n\r\n";
    char size_line[24];
    std::array<net::const_buffer, 5> bufs;
    std::size_t count = 0;
    if (!header_sent) bufs[count++] = net::buffer(head);
    if (size > 0) {
      if (chunked) {
        int n = std::snprintf(size_line, sizeof size_line, "%zx\r\n", size);
        bufs[count++] = net::buffer(size_line, static_cast<std::size_t>(n));
      }
      bufs[count++] = net::buffer(data, size);
      if (chunked) bufs[count++] = net::buffer(kCrlf.data(), kCrlf.size());
    }
    if (!more && chunked) bufs[count++] = net::buffer(kLastChunk.data(), kLastChunk.size());
    down.deadline.after(idle);
    auto [ec, n] = co_await net::async_write(
        down.stream, std::span<const net::const_buffer>(bufs.data(), count), use_tuple);
    ctx.bytes_out += n;
    if (ec) co_return false;
    header_sent = true;
    if (!more) finished = true;
    co_return true;
  };
  // A stream's header goes out at once (the client sees the response start); a JSON answer's
  // header waits for its first body bytes so both leave in one write.
  if (is_sse || parser.is_done()) {
    if (!co_await send(nullptr, 0, !parser.is_done())) {
      client_gone();
      co_return std::nullopt;
    }
  }

  std::array<char, kRelayBuffer> buf;
  std::optional<UpstreamError> broke;
  while (!parser.is_done()) {
    parser.get().body().data = buf.data();
    parser.get().body().size = buf.size();
    boost::system::error_code rec;
    // Body bytes that came with the header are parsed in place; the socket is read only when the
    // buffer holds no complete piece (put() consumes nothing until it has one).
    std::size_t used = conn.buffer.size() > 0 ? parse_buffered(parser, conn.buffer, rec) : 0;
    if (used == 0 && !rec) {
      deadline.after(cfg.timeouts.idle_between_chunks);
      auto [ec, rn] = co_await http::async_read_some(up, conn.buffer, parser, use_tuple);
      rec = ec == http::error::need_buffer ? boost::system::error_code{} : ec;
    }
    std::size_t got = buf.size() - parser.get().body().size;
    if (rec) {
      broke = timed_out(rec) ? UpstreamError::kIdleTimeout
              : (rec == http::error::partial_message || rec == net::error::eof ||
                 rec == net::error::connection_reset || rec == net::ssl::error::stream_truncated)
                  ? UpstreamError::kReset
                  : UpstreamError::kProtocol;
    }
    if (got == 0) {
      if (broke) break;
      continue;
    }
    std::string_view chunk(buf.data(), got);
    if (is_sse) {
      sse.feed(chunk);
    } else {
      json.feed(chunk);
    }
    capture_bytes(chunk);
    bool more = broke || !parser.is_done();
    const char* out = buf.data();
    std::size_t out_size = got;
    std::string stripped;
    if (stripper) {  // the usage the gateway asked for is not the client's
      stripped = stripper->feed(chunk);
      if (!more) stripped += stripper->finish();
      out = stripped.data();
      out_size = stripped.size();
      if (out_size == 0 && more) {
        if (broke) break;
        continue;
      }
    }
    if (!co_await send(out, out_size, more)) {
      client_gone();
      co_return std::nullopt;
    }
    if (broke) break;
  }
  deadline.never();
  ctx.usage = is_sse ? sse.usage() : json.usage();
  if (capture && !is_sse && !broke && !captured.empty()) out.created_id = routing::created_id(captured);

  if (broke && !header_sent) {
    // The backend failed after its header but before the client saw anything: the caller
    // answers with a gateway error (never a retry: the backend already answered).
    co_return broke;
  }
  if (broke) {
    route.upstream_errors[*broke].add();
    ctx.outcome = "upstream_error";
    ctx.error = metrics::to_string(*broke);
    if (is_sse && chunked) {
      // End the stream well-formed: an error event the SDKs raise as APIError, then the last
      // chunk. The client's connection stays usable (its framing is intact); closing it here
      // would race the client's next request on a connection it believes is kept alive.
      auto event = sse_error_event(*broke == UpstreamError::kIdleTimeout ? "backend_timeout"
                                                                          : "backend_disconnected",
                                   "the backend stopped the stream before it ended");
      // The event, then the last chunk.
      if (!co_await send(event.data(), event.size(), false)) keep_alive = false;
    } else {
      keep_alive = false;  // the client's message cannot be ended properly: close instead
    }
    co_return std::nullopt;
  }
  if (!finished && !co_await send(nullptr, 0, false)) {
    client_gone();
    co_return std::nullopt;
  }
  reusable = parser.keep_alive();
  co_return std::nullopt;
}

}  // namespace

template <class Down>
net::awaitable<bool> respond(Client<Down> down, core::RequestContext& ctx, int status, std::string body,
                             bool keep_alive, unsigned version, std::string_view content_type,
                             const std::vector<std::pair<std::string, std::string>>& extra) {
  http::response<http::string_body> res{static_cast<http::status>(status), version};
  res.set(http::field::content_type, content_type);
  res.set("x-request-id", ctx.request_id);
  if (!ctx.backend.empty()) res.set("x-tollgate-backend", ctx.backend);
  for (const auto& [k, v] : extra) res.set(k, v);
  res.keep_alive(keep_alive);
  res.body() = std::move(body);
  res.prepare_payload();
  ctx.status = status;
  down.deadline.after(std::chrono::seconds(30));
  auto [ec, n] = co_await http::async_write(down.stream, res, use_tuple);
  ctx.bytes_out += n;
  co_return !ec && keep_alive;
}

template <class Down>
net::awaitable<bool> respond_failure(Client<Down> down, core::RequestContext& ctx,
                                     UpstreamError reason, bool keep_alive, unsigned version) {
  auto f = failure(reason);
  ctx.outcome = "upstream_error";
  ctx.error = metrics::to_string(f.reason);
  core::HttpError e{f.status, std::string(f.code), std::string(f.message), {}, {}};
  co_return co_await respond(down, ctx, f.status, e.body(), keep_alive, version);
}

template <class Down>
net::awaitable<bool> send_held(Client<Down> down, core::RequestContext& ctx,
                               http::response<http::string_body>& held, bool keep_alive,
                               unsigned version) {
  held.version(version);
  held.set("x-request-id", ctx.request_id);
  if (!ctx.backend.empty()) held.set("x-tollgate-backend", ctx.backend);
  held.keep_alive(keep_alive);
  held.prepare_payload();
  ctx.status = static_cast<int>(held.result_int());
  down.deadline.after(std::chrono::seconds(30));
  auto [ec, n] = co_await http::async_write(down.stream, held, use_tuple);
  ctx.bytes_out += n;
  co_return !ec && keep_alive;
}

bool client_closed(tcp::socket& socket) {
  char c;
  auto n = ::recv(socket.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

template <class Down>
net::awaitable<AttemptResult> attempt(Client<Down> down, const Request& req, std::string_view body,
                                      core::RequestContext& ctx, server::Worker& worker,
                                      const server::BackendRuntime& backend, bool& keep_alive,
                                      AttemptOptions options) {
  const auto& cfg = *backend.config;
  auto& pool = worker.pool(backend.pool_id);
  auto& cells = worker.stats().route(ctx.series);
  AttemptResult out;

  // Nothing reached the client: count the failure; the caller answers or retries.
  auto failed = [&](UpstreamError reason) {
    cells.upstream_errors[reason].add();
    out.kind = AttemptResult::Kind::kFailed;
    out.error = reason;
    return std::move(out);
  };

  std::shared_ptr<const std::string> bearer;
  if (backend.token) {
    bearer = backend.token->token.load();
    auto now = std::chrono::duration_cast<std::chrono::seconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count();
    if (!bearer || now >= backend.token->expires_unix.load(std::memory_order_relaxed)) {
      co_return failed(UpstreamError::kCredential);
    }
  }
  auto upreq = build_upstream_request(req, body, ctx, cfg, bearer.get());

  // At most two tries: a pooled connection whose request could not be written (the backend
  // closed it while idle) is followed by one fresh connection.
  for (int round = 0; round < 2; ++round) {
    std::int64_t idle_delta = 0;
    auto conn = round == 0 ? pool.take(SteadyClock::now(), cfg.keepalive_idle, idle_delta)
                           : nullptr;
    worker.stats().upstream_idle.add(idle_delta);
    bool pooled = conn != nullptr;
    if (!conn) {
      std::optional<UpstreamError> err;
      conn = co_await connect(worker, backend, pool, err);
      if (!conn) co_return failed(*err);
    }
    ++conn->uses;
    bool reusable = false;
    bool response_started = false;
    std::optional<UpstreamError> err;
    out.kind = AttemptResult::Kind::kRelayed;
    if (auto* plain = std::get_if<PlainStream>(&conn->stream)) {
      err = co_await relay(down, *plain, *conn, upreq, req, ctx, worker, cfg, keep_alive, reusable,
                           response_started, options, out, backend.state.get());
    } else {
      err = co_await relay(down, std::get<TlsStream>(conn->stream), *conn, upreq, req, ctx, worker,
                           cfg, keep_alive, reusable, response_started, options, out,
                           backend.state.get());
    }
    if (!err) {
      if (reusable && pool.put(std::move(conn), cfg.max_idle_connections, SteadyClock::now())) {
        worker.stats().upstream_idle.add(1);
      }
      if (ctx.outcome == std::string_view("client_gone")) keep_alive = false;
      co_return std::move(out);
    }
    // Retry once on a fresh connection only when a pooled connection failed before the
    // request could be written: the backend cannot have seen it. (A failure after the write
    // may follow a request the backend read: that is the balancer's decision, not ours.)
    bool stale_reuse = pooled && !response_started && *err == UpstreamError::kWrite;
    if (stale_reuse) continue;
    out.answered = response_started;
    co_return failed(*err);
  }
  co_return failed(UpstreamError::kWrite);  // unreachable: the second round never reuses
}

template net::awaitable<AttemptResult> attempt<PlainStream>(
    Client<PlainStream>, const Request&, std::string_view, core::RequestContext&, server::Worker&,
    const server::BackendRuntime&, bool&, AttemptOptions);
template net::awaitable<AttemptResult> attempt<TlsStream>(
    Client<TlsStream>, const Request&, std::string_view, core::RequestContext&, server::Worker&,
    const server::BackendRuntime&, bool&, AttemptOptions);
template net::awaitable<bool> send_held<PlainStream>(Client<PlainStream>, core::RequestContext&,
                                                     http::response<http::string_body>&, bool,
                                                     unsigned);
template net::awaitable<bool> send_held<TlsStream>(Client<TlsStream>, core::RequestContext&,
                                                   http::response<http::string_body>&, bool,
                                                   unsigned);
template net::awaitable<bool> respond_failure<PlainStream>(Client<PlainStream>,
                                                           core::RequestContext&, UpstreamError,
                                                           bool, unsigned);
template net::awaitable<bool> respond_failure<TlsStream>(Client<TlsStream>, core::RequestContext&,
                                                         UpstreamError, bool, unsigned);
template net::awaitable<bool> respond<PlainStream>(
    Client<PlainStream>, core::RequestContext&, int, std::string, bool, unsigned, std::string_view,
    const std::vector<std::pair<std::string, std::string>>&);
template net::awaitable<bool> respond<TlsStream>(
    Client<TlsStream>, core::RequestContext&, int, std::string, bool, unsigned, std::string_view,
    const std::vector<std::pair<std::string, std::string>>&);

}  // namespace tollgate::proxy

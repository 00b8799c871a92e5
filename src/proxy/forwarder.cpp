#include "proxy/forwarder.hpp"

#include "proxy/connect.hpp"
#include "proxy/relay.hpp"
#include "proxy/upstream_pool.hpp"
#include "tollgate/core/api_call.hpp"

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

}  // namespace

// Opens a new connection (TCP, then TLS with SNI and host name verification).
net::awaitable<std::unique_ptr<UpstreamConn>> connect_backend(const UpstreamEnv& env,
                                                              const pipeline::BackendRuntime& b,
                                                              std::optional<UpstreamError>& err) {
  const auto& cfg = *b.config;
  auto stream = co_await connect_upstream(
      UpstreamTarget{.host = cfg.endpoint.host,
                     .port = cfg.endpoint.port,
                     .tls = b.tls.get(),
                     .timeout = cfg.timeouts.connect,
                     .resolve_timeout = cfg.timeouts.resolve},
      env.resolver);
  // A TCP connection was made even when its handshake then failed.
  if (stream || stream.error().step == ConnectStep::kTls) env.stats.upstream_connects.add();
  if (!stream) {
    err = to_upstream_error(stream.error());
    co_return nullptr;
  }
  auto conn = std::make_unique<UpstreamConn>(std::move(*stream));
  conn->deadline = std::make_unique<Deadline>(conn->lowest().socket());
  co_return conn;
}

namespace {

UpRequest build_upstream_request(const Request& req, std::string_view body,
                                 const pipeline::RequestContext& ctx,
                                 const config::BackendConfig& cfg, const Credential& credential) {
  UpRequest up;
  auto& h = up.head;
  h.reserve(1024 + cfg.api_key.size() + (credential.bearer ? credential.bearer->size() : 0));
  append_request_head(h, req.method_string(), core::upstream_target(ctx.call, cfg), req, ctx, cfg,
                      credential);
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

}  // namespace

void append_request_head(std::string& h, std::string_view method, std::string_view target,
                         const Request& req, const pipeline::RequestContext& ctx,
                         const config::BackendConfig& cfg, const Credential& credential) {
  h.append(method.data(), method.size());
  h += ' ';
  h.append(target.data(), target.size());
  h += " HTTP/1.1\r\nHost: ";
  h += cfg.endpoint.host_header;
  append_credential(h, cfg, credential);
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
}

std::optional<Credential> backend_credential(const pipeline::BackendRuntime& backend) {
  Credential c;
  if (!backend.token) return c;
  c.bearer = backend.token->token.load();
  auto now = core::unix_now_seconds();
  if (!c.bearer || now >= backend.token->expires_unix.load(std::memory_order_relaxed))
    return std::nullopt;
  return c;
}

void append_credential(std::string& head, const config::BackendConfig& cfg, const Credential& c) {
  if (c.bearer) {  // an Entra ID token the gateway obtained for this backend
    head += "\r\nAuthorization: Bearer ";
    head += *c.bearer;
  } else {
    head += "\r\napi-key: ";
    head += cfg.api_key;
  }
}

template <class Down>
net::awaitable<bool> respond(Client<Down> down, pipeline::RequestContext& ctx, int status, std::string body,
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
net::awaitable<bool> respond_failure(Client<Down> down, pipeline::RequestContext& ctx,
                                     UpstreamError reason, bool keep_alive, unsigned version) {
  auto f = failure(reason);
  ctx.outcome = pipeline::Outcome::kUpstreamError;
  ctx.error = metrics::to_string(f.reason);
  core::HttpError e{f.status, std::string(f.code), std::string(f.message), {}, {}};
  co_return co_await respond(down, ctx, f.status, e.body(), keep_alive, version);
}

template <class Down>
net::awaitable<bool> send_held(Client<Down> down, pipeline::RequestContext& ctx,
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
  return peek_peer(socket.native_handle()) == PeerState::kClosed;
}

template <class Down>
net::awaitable<AttemptResult> attempt(Client<Down> down, const Request& req, std::string_view body,
                                      pipeline::RequestContext& ctx, const UpstreamEnv& env,
                                      const pipeline::BackendRuntime& backend, bool& keep_alive,
                                      AttemptOptions options) {
  const auto& cfg = *backend.config;
  auto& pool = env.pools.get(backend.pool_id);
  auto& cells = env.stats.route(ctx.series);
  AttemptResult out;

  // Nothing reached the client: count the failure; the caller answers or retries.
  auto failed = [&](UpstreamError reason) {
    cells.upstream_errors[reason].add();
    out.kind = AttemptResult::Kind::kFailed;
    out.error = reason;
    return std::move(out);
  };

  auto credential = backend_credential(backend);
  if (!credential) co_return failed(UpstreamError::kCredential);
  auto upreq = build_upstream_request(req, body, ctx, cfg, *credential);
  const RelaySettings settings{cfg.timeouts.first_byte, cfg.timeouts.idle_between_chunks,
                               env.client_write_timeout, cfg.name};

  // At most two tries: a pooled connection whose request could not be written (the backend
  // closed it while idle) is followed by one fresh connection.
  for (int round = 0; round < 2; ++round) {
    std::int64_t idle_delta = 0;
    auto conn = round == 0 ? pool.take(SteadyClock::now(), idle_delta)
                           : nullptr;
    env.stats.upstream_idle.add(idle_delta);
    bool pooled = conn != nullptr;
    if (!conn) {
      std::optional<UpstreamError> err;
      conn = co_await connect_backend(env, backend, err);
      if (!conn) co_return failed(*err);
    }
    ++conn->uses;
    RelayJob job{upreq,   req.method(), req.version(), keep_alive,
                 options, settings,     cells,         backend.state.get()};
    RelayResult r;
    if (auto* plain = std::get_if<PlainStream>(&conn->stream)) {
      r = co_await relay(down, Upstream<PlainStream>{*plain, conn->buffer, *conn->deadline}, job,
                         ctx);
    } else {
      auto& tls = std::get<TlsStream>(conn->stream);
      r = co_await relay(down, Upstream<TlsStream>{tls, conn->buffer, *conn->deadline}, job, ctx);
    }
    keep_alive = r.keep_alive;
    if (r.attempt.kind != AttemptResult::Kind::kFailed) {
      if (r.reusable && pool.put(std::move(conn), PoolLimits{cfg.max_idle_connections, cfg.keepalive_idle},
                                  SteadyClock::now())) {
        env.stats.upstream_idle.add(1);
      }
      if (ctx.outcome == pipeline::Outcome::kClientGone) keep_alive = false;
      co_return std::move(r.attempt);
    }
    // Retry once on a fresh connection only when a pooled connection failed before the
    // request could be written: the backend cannot have seen it. (A failure after the write
    // may follow a request the backend read: that is the balancer's decision, not ours.)
    auto err = *r.attempt.error;
    bool stale_reuse = pooled && !r.attempt.answered && err == UpstreamError::kWrite;
    if (stale_reuse) continue;
    out = std::move(r.attempt);
    co_return failed(err);
  }
  co_return failed(UpstreamError::kWrite);  // unreachable: the second round never reuses
}

template net::awaitable<AttemptResult> attempt<PlainStream>(
    Client<PlainStream>, const Request&, std::string_view, pipeline::RequestContext&, const UpstreamEnv&,
    const pipeline::BackendRuntime&, bool&, AttemptOptions);
template net::awaitable<AttemptResult> attempt<TlsStream>(
    Client<TlsStream>, const Request&, std::string_view, pipeline::RequestContext&, const UpstreamEnv&,
    const pipeline::BackendRuntime&, bool&, AttemptOptions);
template net::awaitable<bool> send_held<PlainStream>(Client<PlainStream>, pipeline::RequestContext&,
                                                     http::response<http::string_body>&, bool,
                                                     unsigned);
template net::awaitable<bool> send_held<TlsStream>(Client<TlsStream>, pipeline::RequestContext&,
                                                   http::response<http::string_body>&, bool,
                                                   unsigned);
template net::awaitable<bool> respond_failure<PlainStream>(Client<PlainStream>,
                                                           pipeline::RequestContext&, UpstreamError,
                                                           bool, unsigned);
template net::awaitable<bool> respond_failure<TlsStream>(Client<TlsStream>, pipeline::RequestContext&,
                                                         UpstreamError, bool, unsigned);
template net::awaitable<bool> respond<PlainStream>(
    Client<PlainStream>, pipeline::RequestContext&, int, std::string, bool, unsigned, std::string_view,
    const std::vector<std::pair<std::string, std::string>>&);
template net::awaitable<bool> respond<TlsStream>(
    Client<TlsStream>, pipeline::RequestContext&, int, std::string, bool, unsigned, std::string_view,
    const std::vector<std::pair<std::string, std::string>>&);

}  // namespace tollgate::proxy

// Client connections, read top-down: the accept loop hands each connection to run_session, which
// reads each request's header (size and time limits, strict framing) and gives it to serve():
// the header stages (who calls what, before any body byte is read), the body within the
// gateway's body budget, then handle(): the request stages (src/server/pipeline), the request
// filters, then forward() — the balancer, waiting for capacity, and attempts on backends with
// failover. Every request ends in pipeline::finish().

#include "server/session.hpp"
#include "server/shared_admission.hpp"
#include "server/shared_lookup.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>

#include "proxy/forwarder.hpp"
#include "proxy/net.hpp"
#include "server/body_budget.hpp"
#include "server/framing.hpp"
#include "server/object_lists.hpp"
#include "server/pipeline/finish.hpp"
#include "server/pipeline/stages.hpp"
#include "tollgate/core/request_id.hpp"
#include "server/worker.hpp"
#include "tollgate/metrics/logging.hpp"
#include "tollgate/routing/affinity.hpp"
#include "tollgate/routing/lease.hpp"

namespace tollgate::server {

using namespace proxy;  // net, beast, http, streams, use_tuple
using pipeline::RequestContext;
using pipeline::Exchange;
using pipeline::Reply;

namespace {

template <class Stream>
net::awaitable<void> run_session(Worker& w, Stream stream, std::string remote);
net::awaitable<void> run_tls_session(Worker& w, tcp::socket sock,
                                     std::shared_ptr<net::ssl::context> tls, std::string remote);

}  // namespace

void spawn_session(Worker& w, tcp::socket sock, std::shared_ptr<net::ssl::context> tls,
                   std::string remote, AddressCounts::Slot slot) {
  // The address's slot goes back when the session ends: it lives in the completion handler.
  auto done = [slot = std::move(slot), log = metrics::LogFailure{"coroutine failed", "task",
                                                                 tls ? "tls session" : "session"}](
                  std::exception_ptr e) { log(e); };
  if (tls) {
    net::co_spawn(w.io(), run_tls_session(w, std::move(sock), std::move(tls), std::move(remote)),
                  std::move(done));
  } else {
    net::co_spawn(w.io(), run_session(w, PlainStream(std::move(sock)), std::move(remote)),
                  std::move(done));
  }
}

namespace {

// ---------------------------------------------------------------------------------------------
// The connection: TLS handshake, the request loop, lingering and graceful close.

/// A request read whole, or why there is none.
enum class ReadResult : std::uint8_t {
  kRequest,  // the parser holds a complete request
  kClosed,   // the connection ended between requests (close, timeout, drain): no answer
  kRefused,  // malformed or too large: answered, finished; the connection closes
};

net::awaitable<void> run_tls_session(Worker& w, tcp::socket sock,
                                     std::shared_ptr<net::ssl::context> tls, std::string remote) {
  TlsStream stream(std::move(sock), *tls);
  auto timeout = w.snapshot()->config->server.limits.header_timeout;
  beast::get_lowest_layer(stream).expires_after(timeout);
  auto [ec] = co_await stream.async_handshake(net::ssl::stream_base::server, use_tuple);
  if (ec) co_return;
  beast::get_lowest_layer(stream).expires_never();  // from here on, the session's Deadline
  co_await run_session(w, std::move(stream), std::move(remote));
}

/// Counts the connection and registers it so a drain can close it while idle.
class SessionScope {
 public:
  template <class Stream>
  SessionScope(Worker& w, Stream& stream)
      : w_(w), it_(w.register_session([&stream] { beast::get_lowest_layer(stream).cancel(); })) {
    w_.stats().open_connections.add(1);
    w_.stats().connections_total.add();
  }
  ~SessionScope() {
    w_.unregister_session(it_);
    w_.stats().open_connections.add(-1);
  }
  Worker::SessionEntry& entry() { return *it_; }

 private:
  Worker& w_;
  std::list<Worker::SessionEntry>::iterator it_;
};

/// finish() runs even when the request's coroutine is never resumed (a worker stopped after the
/// drain timeout destroys it) or an exception unwinds it: no settlement or usage record is lost.
struct FinishGuard {
  Worker& w;
  RequestContext& ctx;
  bool armed = true;
  ~FinishGuard() {
    if (!armed) return;
    ctx.outcome = std::uncaught_exceptions() > 0 ? pipeline::Outcome::kInternalError : pipeline::Outcome::kShutdown;
    if (ctx.error.empty()) ctx.error = pipeline::to_string(ctx.outcome);
    try {
      pipeline::finish(w.finish_env(), ctx);
    } catch (...) {  // nothing may escape a destructor
    }
  }
};

using Parser = http::request_parser<http::string_body>;

/// The client read buffer, taken when a request's first bytes arrive: Beast reads at most its
/// free capacity, and 512-byte steps would cost a syscall each.
constexpr std::size_t kReadBufferBytes = 8 * 1024;

/// One request's parser and context, allocated once its first bytes arrived.
struct RequestState {
  Parser parser;
  RequestContext ctx;
};

/// Waits, holding nothing, until the next request's bytes arrive (or some are buffered
/// already: pipelining). An idle connection gives its read buffer back (like nginx), so 10,000
/// idle keep-alive clients cost their sockets and this small frame. Under TLS the wait is the
/// header read itself: the TLS stream may hold a request already read from the socket. False
/// when the connection closed or timed out (nobody to answer).
template <class Stream>
net::awaitable<bool> await_request(Worker& w, Client<Stream> client, beast::flat_buffer& buffer,
                                   SessionScope& scope, bool first) {
  const auto& limits = w.snapshot()->config->server.limits;  // read before any co_await
  scope.entry().idle = true;
  client.deadline.after(first ? limits.header_timeout : limits.idle_timeout);
  if constexpr (std::is_same_v<Stream, TlsStream>) co_return true;
  if (buffer.size() > 0) co_return true;
  buffer.shrink_to_fit();
  auto [ec] = co_await beast::get_lowest_layer(client.stream).socket().async_wait(
      tcp::socket::wait_read, use_tuple);
  co_return !ec;
}

template <class Stream>
net::awaitable<ReadResult> read_header(Worker& w, Client<Stream> client, beast::flat_buffer& buffer,
                                       Parser& parser, RequestContext& ctx, SessionScope& scope,
                                       bool first);
template <class Stream>
net::awaitable<bool> serve(Worker& w, Client<Stream> client, beast::flat_buffer& buffer,
                           Parser& parser, RequestContext& ctx, const Snapshot& snap,
                           const AuthState& auth);

template <class Stream>
net::awaitable<void> run_session(Worker& w, Stream stream, std::string remote) {
  SessionScope scope(w, stream);
  Deadline deadline(beast::get_lowest_layer(stream).socket());
  Client<Stream> client{stream, deadline};
  beast::flat_buffer buffer;  // taken when a request's bytes arrive (read_header)
  for (bool first = true; !w.draining(); first = false) {
    if (!co_await await_request(w, client, buffer, scope, first)) co_return;
    // Per-request state lives on the heap while a request runs, not in this frame: an idle
    // connection costs no parser and no context (~2 KB).
    auto request = std::make_unique<RequestState>();
    auto& parser = request->parser;
    auto& ctx = request->ctx;
    ctx.remote = remote;
    auto read = co_await read_header(w, client, buffer, parser, ctx, scope, first);
    if (read != ReadResult::kRequest) co_return;
    // The request runs on the newest snapshot and identities as of its arrival, and keeps them
    // to its end (finish included).
    auto snap = w.snapshot();
    auto auth = w.auth();
    FinishGuard guard{w, ctx};
    bool keep = co_await serve(w, client, buffer, parser, ctx, *snap, *auth);
    guard.armed = false;
    pipeline::finish(w.finish_env(), ctx);
    if (!keep) break;
  }
  // Graceful close: for TLS send close_notify (bounded), then shut the socket down.
  if constexpr (std::is_same_v<Stream, TlsStream>) {
    deadline.after(std::chrono::seconds(2));
    co_await stream.async_shutdown(use_tuple);
  }
  boost::system::error_code ignored;
  beast::get_lowest_layer(stream).socket().shutdown(tcp::socket::shutdown_send, ignored);
}

/// After an error answer on a request whose body was not read, keep reading (and discarding) for
/// a short while so the client sees the answer rather than a reset (nginx's lingering close).
template <class Stream>
net::awaitable<void> linger_close(Stream& stream, Deadline& deadline) {
  boost::system::error_code ec;
  beast::get_lowest_layer(stream).socket().shutdown(tcp::socket::shutdown_send, ec);
  std::array<char, 16 * 1024> sink;
  std::size_t total = 0;
  deadline.after(kLingerTime);
  while (total < kLingerBytes) {
    auto [rec, n] = co_await beast::get_lowest_layer(stream).async_read_some(net::buffer(sink), use_tuple);
    if (rec) break;
    total += n;
  }
}

core::HttpError body_too_large(std::size_t limit) {
  return http_error(refuse_body_too_large(limit));
}

/// Answers a request refused while it was read and (`linger`) drains what the client still
/// sends so it sees the answer. The caller finishes the request.
template <class Stream>
net::awaitable<ReadResult> refuse_read(Client<Stream> client, RequestContext& ctx,
                                       std::string_view reason, const core::HttpError* e,
                                       unsigned version, bool linger) {
  ctx.outcome = pipeline::Outcome::kRejected;
  ctx.error = reason;
  if (e != nullptr) co_await respond(client, ctx, e->status, e->body(), false, version);
  if (linger) co_await linger_close(client.stream, client.deadline);
  co_return ReadResult::kRefused;
}

/// Answers `r` (Connection: close), closes lingering, and finishes the request (refused
/// before the stages).
template <class Stream>
net::awaitable<ReadResult> refuse(Worker& w, Client<Stream> client, RequestContext& ctx,
                                  const Refusal& r, unsigned version) {
  auto e = http_error(r);
  co_await refuse_read(client, ctx, r.reason, &e, version, true);
  pipeline::finish(w.finish_env(), ctx);
  co_return ReadResult::kRefused;
}

void describe(RequestContext& ctx, const http::request_parser<http::string_body>& parser) {
  const auto& header = parser.get();
  auto rid = header["x-request-id"];
  ctx.request_id = core::acceptable_request_id(rid) ? std::string(rid) : core::new_request_id();
  ctx.method = std::string(header.method_string());
  auto target = header.target();
  ctx.path = std::string(target.substr(0, target.find('?')));
  ctx.user_agent = std::string(header[http::field::user_agent].substr(0, 256));
}

// A header refused before it was whole: what the parser read of it (the request line once it
// was whole, and the fields so far), else the method and path as far as they came in.
void describe_partial(RequestContext& ctx, const http::request_parser<http::string_body>& parser,
                      std::string_view raw) {
  describe(ctx, parser);
  if (!parser.get().target().empty()) return;
  auto line = split_request_line(raw);
  ctx.method = std::string(line.method);
  ctx.path = std::string(line.target.substr(0, line.target.find('?')));
}

// A header that could not be read: silence for closes and timeouts between requests (a Deadline
// cancels: operation_aborted), a status for the rest (server/framing.hpp).
template <class Stream>
net::awaitable<ReadResult> bad_header(Worker& w, Client<Stream> client, RequestContext& ctx,
                                      boost::system::error_code ec,
                                      const http::request_parser<http::string_body>& parser,
                                      const beast::flat_buffer& buffer, std::size_t body_limit) {
  std::string_view raw(static_cast<const char*>(buffer.data().data()), buffer.size());
  bool line_read = !parser.get().target().empty();  // Beast stores the line once it is whole
  auto refusal = refuse_unparsed({ec, raw, line_read}, body_limit);
  if (!refusal) co_return ReadResult::kClosed;
  w.stats().in_flight.add(1);
  describe_partial(ctx, parser, raw);
  co_return co_await refuse(w, client, ctx, *refusal, 11);
}

template <class Stream>
net::awaitable<bool> refuse_before_body(Worker& w, Client<Stream> client, const Parser& parser,
                                        RequestContext& ctx, const Reply& reply);

// How long a client refused for want of body budget is told to wait.
constexpr std::int64_t kBuffersFullRetryMs = 1000;
// A chunked body's size is known only at its end: it takes from the body budget in steps.
constexpr std::size_t kChunkedBudgetStep = 256u << 10;

/// Takes the body's bytes from the gateway's budget: a known length at once, a chunked body's
/// first step (read_body takes the next ones as it grows).
bool reserve_body(Worker& w, const Parser& parser, BodyBudget::Hold& hold) {
  if (parser.is_done()) return true;  // no body
  auto length = parser.content_length();
  return w.body_budget().take(length ? static_cast<std::size_t>(*length) : kChunkedBudgetStep, hold);
}

/// Reads the body into the parser (what the header read buffered first), growing a chunked
/// body's hold on the budget as it arrives. `full`: the budget refused a step.
template <class Stream>
net::awaitable<boost::system::error_code> read_body_bytes(Worker& w, Client<Stream> client,
                                                          beast::flat_buffer& buffer, Parser& parser,
                                                          BodyBudget::Hold& hold, std::size_t& n,
                                                          bool& full) {
  boost::system::error_code ec;
  n = parse_buffered(parser, buffer, ec);
  bool chunked = !parser.content_length();
  while (!ec && !parser.is_done()) {
    if (chunked && parser.get().body().size() + kChunkedBudgetStep > hold.bytes() &&
        !w.body_budget().take(kChunkedBudgetStep, hold)) {
      full = true;
      break;
    }
    auto [rec, rn] = co_await http::async_read_some(client.stream, buffer, parser, use_tuple);
    ec = rec == http::error::need_buffer ? boost::system::error_code{} : rec;
    n += rn;
  }
  co_return ec;
}

template <class Stream>
net::awaitable<ReadResult> read_body(Worker& w, Client<Stream> client, beast::flat_buffer& buffer,
                                     Parser& parser, RequestContext& ctx,
                                     const config::ServerLimits& limits, BodyBudget::Hold& hold) {
  auto version = parser.get().version();
  if (beast::iequals(parser.get()[http::field::expect], "100-continue") && !parser.is_done()) {
    http::response<http::empty_body> cont{http::status::continue_, version};
    co_await http::async_write(client.stream, cont, use_tuple);
  }
  client.deadline.after(limits.header_timeout);
  std::size_t n = 0;
  bool full = false;
  auto ec = co_await read_body_bytes(w, client, buffer, parser, hold, n, full);
  ctx.bytes_in += n;
  if (full) {  // the rest of the body is not read
    co_await refuse_before_body(w, client, parser, ctx, pipeline::buffers_full(kBuffersFullRetryMs));
    co_return ReadResult::kRefused;
  }
  if (!ec) co_return ReadResult::kRequest;
  if (ec == http::error::body_limit) {
    auto e = body_too_large(limits.max_request_body);
    co_return co_await refuse_read(client, ctx, "body_too_large", &e, version, true);
  }
  bool silent = ec == net::error::operation_aborted || ec == beast::error::timeout ||
                ec == http::error::partial_message || ec == net::error::eof;
  if (silent) co_return co_await refuse_read(client, ctx, "incomplete_request", nullptr, version, false);
  auto e = core::bad_request("malformed HTTP request body");  // e.g. a bad chunk
  co_return co_await refuse_read(client, ctx, "bad_request", &e, version, true);
}

template <class Stream>
net::awaitable<ReadResult> read_header(Worker& w, Client<Stream> client, beast::flat_buffer& buffer,
                                       Parser& parser, RequestContext& ctx, SessionScope& scope,
                                       bool first) {
  const auto limits = w.snapshot()->config->server.limits;  // a copy: the snapshot may change
  parser.header_limit(static_cast<std::uint32_t>(limits.max_header_size));
  parser.body_limit(limits.max_request_body);
  scope.entry().idle = true;
  client.deadline.after(first ? limits.header_timeout : limits.idle_timeout);
  if (buffer.capacity() == 0) buffer.reserve(kReadBufferBytes);
  auto [ec, hn] = co_await http::async_read_header(client.stream, buffer, parser, use_tuple);
  scope.entry().idle = false;
  ctx.start = core::SteadyClock::now();
  ctx.series = w.snapshot()->unrouted_series;
  if (ec) co_return co_await bad_header(w, client, ctx, ec, parser, buffer, limits.max_request_body);
  w.stats().in_flight.add(1);
  describe(ctx, parser);
  ctx.bytes_in = hn;
  if (auto bad = check_framing(framing_view(parser.get()))) {
    co_return co_await refuse(w, client, ctx, *bad, parser.get().version());
  }
  auto length = parser.content_length();
  if (length && *length > limits.max_request_body) {
    co_return co_await refuse(w, client, ctx, refuse_body_too_large(limits.max_request_body),
                              parser.get().version());
  }
  co_return ReadResult::kRequest;
}

// ---------------------------------------------------------------------------------------------
// One request: the stages, the filters, forward.

template <class Stream>
net::awaitable<bool> send_reply(Client<Stream> client, const Request& req, RequestContext& ctx,
                                const Reply& reply, bool keep_alive) {
  ctx.outcome = reply.outcome;
  ctx.error = reply.reason;
  co_return co_await respond(client, ctx, reply.status, reply.body, keep_alive, req.version(),
                             "application/json", reply.headers);
}

template <class Stream>
net::awaitable<bool> forward(Worker& w, Client<Stream> client, const Request& req, Exchange& x,
                             bool keep_alive);

/// A request refused before its body was read (from its header alone, or as the body budget
/// ran out): answered at once. When a body follows, the connection closes without reading it (a lingering close discards what is in flight, so the
/// client sees the answer) and no `100 Continue` is sent.
template <class Stream>
net::awaitable<bool> refuse_before_body(Worker& w, Client<Stream> client, const Parser& parser,
                                        RequestContext& ctx, const Reply& reply) {
  const auto& req = parser.get();
  bool body_follows = !parser.is_done();
  bool keep = !body_follows && req.keep_alive() && !w.draining();
  co_await send_reply(client, req, ctx, reply, keep);
  if (body_follows) co_await linger_close(client.stream, client.deadline);
  co_return keep;
}

/// The request once its body is read: the request stages, the filters, forward (a list call:
/// answer_list, which asks every backend). Returns whether to keep the connection.
template <class Stream>
net::awaitable<bool> handle(Worker& w, Client<Stream> client, const Request& req, Exchange& x) {
  bool keep_alive = req.keep_alive() && !w.draining();
  x.req.body = req.body();
  if (auto reply = pipeline::run_locating_stages(x)) {
    co_return co_await send_reply(client, req, x.ctx, *reply, keep_alive);
  }
  if (awaits_objects(x)) {
    if (auto reply = co_await locate_shared(w, x)) co_return co_await send_reply(client, req, x.ctx, *reply, keep_alive);
  }
  if (auto reply = pipeline::run_routing_stages(x)) {
    co_return co_await send_reply(client, req, x.ctx, *reply, keep_alive);
  }
  if (awaits_shared(x)) {
    if (auto reply = co_await admit_shared(w, x)) co_return co_await send_reply(client, req, x.ctx, *reply, keep_alive);
  }
  pipeline::run_request_filters(x);
  if (x.list) co_return co_await answer_list(w, client, req, x, keep_alive);  // every backend's
  co_return co_await forward(w, client, req, x, keep_alive);
}

/// One request: the header stages (who calls what) before any body byte is read, then the
/// body within the gateway's budget, then handle(). Returns whether to keep the connection.
template <class Stream>
net::awaitable<bool> serve(Worker& w, Client<Stream> client, beast::flat_buffer& buffer,
                           Parser& parser, RequestContext& ctx, const Snapshot& snap,
                           const AuthState& auth) {
  const auto& req = parser.get();
  auto lookup = [&req](std::string_view name) { return std::string_view(req[name]); };
  pipeline::RequestView view{req.method_string(), req.target(), pipeline::Headers(lookup), {}};
  Exchange x{snap, auth, view, ctx, w.stats(), w.clock(), w.ledger() != nullptr, w.shared_limiter() != nullptr};
  auto refused = pipeline::run_header_stages(x);
  if (x.identity.refresh_issuer) w.unknown_kid(*x.identity.refresh_issuer);
  if (refused) co_return co_await refuse_before_body(w, client, parser, ctx, *refused);
  BodyBudget::Hold hold;  // given back when the request ends
  if (!reserve_body(w, parser, hold)) {
    co_return co_await refuse_before_body(w, client, parser, ctx, pipeline::buffers_full(kBuffersFullRetryMs));
  }
  if (co_await read_body(w, client, buffer, parser, ctx, snap.config->server.limits, hold) !=
      ReadResult::kRequest) {
    co_return false;
  }
  co_return co_await handle(w, client, parser.get(), x);
}

// ---------------------------------------------------------------------------------------------
// Forwarding: attempts on backends picked tier by tier, failing over while nothing has reached
// the client, waiting for capacity when the class may, feeding every answer into the backends'
// shared state.

// The balancer's reading of one attempt: the breaker outcome, the reason logged and, when the
// request may move to another backend, why.
struct Judgement {
  routing::Outcome outcome;
  std::string_view reason;
  std::optional<metrics::RetryReason> retry;
};

// `creates`: the request creates a server-side object (file upload, batch, stored response);
// it moves to another backend only when the first cannot have created it (the connection never
// carried it, or the backend refused it with 429/503), so no object is made twice.
Judgement judge_failure(const AttemptResult& r, bool creates) {
  using metrics::UpstreamError;
  auto e = *r.error;
  bool timeout = e == UpstreamError::kConnectTimeout || e == UpstreamError::kFirstByteTimeout ||
                 e == UpstreamError::kIdleTimeout;
  bool unsent = e == UpstreamError::kResolve || e == UpstreamError::kConnect ||
                e == UpstreamError::kConnectTimeout || e == UpstreamError::kTls ||
                e == UpstreamError::kCredential;
  std::optional<metrics::RetryReason> retry;
  if (!r.answered && (unsent || !creates)) {
    retry = timeout ? metrics::RetryReason::kTimeout : metrics::RetryReason::kConnect;
  }
  return {routing::Outcome::kFailure, metrics::to_string(e), retry};
}

Judgement judge(const AttemptResult& r, const RequestContext& ctx, bool creates) {
  using Kind = AttemptResult::Kind;
  using metrics::RetryReason;
  if (r.kind == Kind::kFailed) return judge_failure(r, creates);
  auto retry_if_held = [&](RetryReason reason) {
    bool refused = r.status == 429 || r.status == 503;
    return r.kind == Kind::kHeld && (refused || !creates) ? std::optional(reason) : std::nullopt;
  };
  // A 429 is the throttle's business, not the breaker's: Azure says exactly when to come back,
  // and a breaker would keep a paid-for PTU deployment idle for longer than that.
  if (r.status == 429) return {routing::Outcome::kNeutral, "throttled", retry_if_held(RetryReason::kThrottled)};
  if (r.status == 408) return {routing::Outcome::kFailure, "timeout", retry_if_held(RetryReason::kTimeout)};
  if (r.status >= 500) {
    return {routing::Outcome::kFailure, "server_error", retry_if_held(RetryReason::kServerError)};
  }
  if (ctx.outcome == pipeline::Outcome::kUpstreamError) {  // broke after bytes reached the client
    return {routing::Outcome::kFailure, ctx.error, std::nullopt};
  }
  return {routing::Outcome::kSuccess, "ok", std::nullopt};
}

routing::TimeMs cooldown(const routing::Signals& s, std::string_view body,
                         const config::RoutingConfig& r) {
  auto hint = routing::throttle_hint(s, body);
  auto ms = hint ? hint->count() : r.cooldown_default.count();
  return std::clamp<routing::TimeMs>(ms, r.cooldown_min.count(), r.cooldown_max.count());
}

routing::LeaseEnv lease_env(Worker& w, const Snapshot& snap) {
  return {snap.slots, &snap.breaker, snap.scheduler.get(), &w.rng()};
}

/// One request's attempts so far. Takes the deployment's retry budget for the request's
/// lifetime (and a retry's share of it once one is made).
class Attempts {
 public:
  explicit Attempts(const Exchange& x)
      : tried(x.snap.backends.size()), last_tier(x.route->first_tier), budget_(*x.route->budget) {
    budget_.begin_request();
  }
  ~Attempts() {
    if (retrying_) budget_.end_retry();
    budget_.end_request();
  }
  Attempts(const Attempts&) = delete;
  Attempts& operator=(const Attempts&) = delete;

  /// A retry is counted (and takes budget) only once another backend was found for it.
  bool take_retry(const config::RetryConfig& retry) {
    if (retrying_) return true;
    retrying_ = budget_.try_begin_retry(retry.budget, retry.min_retries);
    return retrying_;
  }

  routing::TriedBackends tried;
  std::optional<AttemptResult> last;
  std::uint32_t last_tier;
  std::optional<std::pair<std::uint32_t, metrics::RetryReason>> pending_retry;  // (series, why)
  unsigned count = 0;

 private:
  routing::RetryBudget& budget_;
  bool retrying_ = false;
};

bool within_retry_deadline(const Exchange& x) {
  return core::SteadyClock::now() - x.ctx.start < x.ctx.deployment->retry.deadline;
}

// The balancer's pick for the next attempt, unless requests of this class or higher already wait
// (a new one queues behind them).
routing::LeaseHandle pick(Worker& w, const Exchange& x, const Attempts& at) {
  auto now = x.clock.steady_ms();
  if (at.count == 0 && x.plan.wait &&
      x.snap.scheduler->must_queue(x.ctx.deployment->name, x.plan.cls)) {
    return {};
  }
  auto lease = routing::pick(x.route->route, x.snap.slots,
                             routing::PickRequest{now, x.need_tokens, at.tried.span(), x.only, x.allowed.span()},
                             w.rng());
  if (!lease) return {};
  return routing::LeaseHandle(lease_env(w, x.snap), *lease);
}

enum class WaitKind : std::uint8_t { kDispatched, kDeadline, kClientGone, kUnreachable, kFull };

struct Waited {
  WaitKind kind;
  routing::LeaseHandle lease;
};

routing::Waiter make_waiter(const Exchange& x, const routing::BackendMask& usable, core::TimeMs now) {
  routing::Waiter waiter;
  waiter.cls = x.plan.cls;
  waiter.flow = x.ctx.client;
  waiter.weight = x.plan.weight;
  waiter.enqueued = now;
  waiter.deadline = x.plan.deadline;
  waiter.deployment = x.ctx.deployment->name;
  waiter.route = &x.route->route;
  waiter.slots = x.snap.slots;
  waiter.need_tokens = x.need_tokens;
  waiter.only = x.only;
  waiter.allowed = usable.span();
  return waiter;
}

/// Waits for the timer (a dispatch expires it, or the deadline passes) while watching the
/// client's socket. Returns kClientGone when the client left, else kDispatched (the caller asks
/// the scheduler whether it was dispatched or timed out).
template <class Stream>
net::awaitable<WaitKind> await_wake(Client<Stream> client, net::steady_timer& timer) {
  using namespace boost::asio::experimental::awaitable_operators;
  auto& sock = beast::get_lowest_layer(client.stream).socket();
  for (bool watch_client = true;;) {
    if (!watch_client) {
      co_await timer.async_wait(use_tuple);
      co_return WaitKind::kDispatched;
    }
    auto r = co_await (timer.async_wait(use_tuple) || sock.async_wait(tcp::socket::wait_read, use_tuple));
    if (r.index() == 0) co_return WaitKind::kDispatched;
    auto [ec] = std::get<1>(r);
    if (ec || client_closed(sock)) co_return WaitKind::kClientGone;
    watch_client = false;  // data (a pipelined request): only the timer from here on
  }
}

/// Waits in the deployment's waiting room until the scheduler hands this request a backend (a
/// lease), its deadline passes, or its client leaves. `usable`: every backend it may still use.
/// Answers at once when no such backend recovers before the deadline, or the queue is full.
template <class Stream>
net::awaitable<Waited> wait_for_capacity(Worker& w, Client<Stream> client, Exchange& x,
                                         const routing::BackendMask& usable) {
  const auto& plan = x.plan;
  auto now = x.clock.steady_ms();
  // A backend that is only busy can free up any moment: worth waiting for whatever the deadline.
  auto earliest = routing::earliest_recovery(x.route->route, x.snap.slots, now, x.only, usable.span(), true);
  if (!earliest || *earliest > plan.deadline) co_return Waited{WaitKind::kUnreachable, {}};
  net::steady_timer timer(w.io());
  timer.expires_after(std::chrono::milliseconds(plan.deadline - now));
  // The dispatcher (any thread, under the scheduler's lock) wakes us through the timer, on this
  // worker; `alive` is cleared before the timer goes away. Expiring the timer (rather than
  // cancelling its wait) makes the wake stick: a wait begun after it completes at once.
  auto alive = std::make_shared<net::steady_timer*>(&timer);
  struct Unhook {
    std::shared_ptr<net::steady_timer*>& alive;
    ~Unhook() { *alive = nullptr; }
  } unhook{alive};
  auto waiter = make_waiter(x, usable, now);
  waiter.wake = [exec = w.io().get_executor(), alive] {
    net::post(exec, [alive] {
      if (*alive != nullptr) (*alive)->expires_at(net::steady_timer::time_point::min());
    });
  };
  // On every way out (this coroutine destroyed by a stop included) the ticket leaves the room
  // and gives back a lease handed to it that nobody took.
  routing::WaitTicket ticket(lease_env(w, x.snap), waiter);
  if (!ticket.enqueue(plan.klass->queue_limit, now)) co_return Waited{WaitKind::kFull, {}};
  if (*earliest > now) x.snap.wake_at(*earliest);  // a cooldown or open breaker ends then
  auto woke = co_await await_wake(client, timer);
  bool left = ticket.leave();  // false: dispatched meanwhile, the lease is ours
  x.ctx.queue_us = std::max<std::int64_t>(x.ctx.queue_us, 0) + (x.clock.steady_ms() - now) * 1000;
  if (!left) co_return Waited{WaitKind::kDispatched, ticket.take()};
  co_return Waited{woke == WaitKind::kClientGone ? WaitKind::kClientGone : WaitKind::kDeadline, {}};
}

/// The step after a wait: a lease to try, the client gone (nullopt lease, `gone`), a shed
/// answer, or nothing (no backend recovers in time: the routing answer follows).
struct AfterWait {
  routing::LeaseHandle lease;
  std::optional<Reply> reply;
  bool gone = false;
};

template <class Stream>
net::awaitable<AfterWait> wait_turn(Worker& w, Client<Stream> client, Exchange& x, const Attempts& at) {
  auto waited = co_await wait_for_capacity(w, client, x, at.tried.usable(x.allowed));
  auto& prio = w.stats().route(x.route->series_none);
  auto cls = x.plan.cls;
  auto shed_count = [&](metrics::ShedReason r) { prio.shed.at(metrics::ClassRank{cls}, r).add(); };
  if (waited.kind != WaitKind::kUnreachable && waited.kind != WaitKind::kFull) {
    prio.queue_wait[metrics::ClassRank{cls}].observe_micros(x.ctx.queue_us);
  }
  AfterWait next;
  switch (waited.kind) {
    case WaitKind::kDispatched:
      prio.dispatched[metrics::ClassRank{cls}].add();
      if (!client_closed(beast::get_lowest_layer(client.stream).socket())) {
        next.lease = std::move(waited.lease);
        break;
      }
      [[fallthrough]];  // the lease goes back when `waited` ends
    case WaitKind::kClientGone:
      shed_count(metrics::ShedReason::kClientGone);
      next.gone = true;
      break;
    case WaitKind::kDeadline:
    case WaitKind::kFull: {
      auto reason = waited.kind == WaitKind::kFull ? metrics::ShedReason::kQueueFull : metrics::ShedReason::kDeadline;
      shed_count(reason);
      next.reply = pipeline::shed(x, reason, x.clock.steady_ms());
      break;
    }
    case WaitKind::kUnreachable:
      shed_count(metrics::ShedReason::kUnreachable);
      break;
  }
  co_return next;
}

bool may_wait(const Exchange& x, const Attempts& at) {
  return x.plan.wait && at.count < x.ctx.deployment->retry.max_attempts &&
         x.clock.steady_ms() < x.plan.deadline && within_retry_deadline(x);
}

/// How one attempt ended for the loop in forward().
enum class Step : std::uint8_t { kRelayed, kClientGone, kRetry, kStop };

// Before an attempt that is a retry: counts it and takes the retry budget (false: exhausted).
bool begin_retry(Worker& w, Exchange& x, Attempts& at) {
  if (!at.pending_retry) return true;
  if (!at.take_retry(x.ctx.deployment->retry)) {
    w.stats().route(x.route->series_none).budget_exhausted.add();
    return false;
  }
  w.stats().route(at.pending_retry->first).retries[at.pending_retry->second].add();
  at.pending_retry.reset();
  return true;
}

void enter_backend(Worker& w, Exchange& x, Attempts& at, const routing::Lease& lease) {
  auto& ctx = x.ctx;
  ctx.series = x.route->series[lease.backend];
  ctx.backend = x.snap.backends[lease.backend].config->name;
  ctx.tier = static_cast<int>(lease.tier) + 1;
  if (lease.tier > at.last_tier) {
    w.stats().route(ctx.series).spilled_from[metrics::tier_rank(at.last_tier)].add();
  }
  at.last_tier = lease.tier;
}

template <class Stream>
net::awaitable<Step> attempt_on(Worker& w, Client<Stream> client, const Request& req, Exchange& x,
                                Attempts& at, routing::LeaseHandle lease, bool& keep_alive) {
  auto& ctx = x.ctx;
  const auto& retry = ctx.deployment->retry;
  const auto& backend = x.snap.backends[lease->backend];
  enter_backend(w, x, at, *lease);
  bool may_retry = at.count < retry.max_attempts && within_retry_deadline(x);
  auto rewritten = core::rewrite_body(ctx.call, *backend.config);
  std::string_view body = rewritten ? std::string_view(*rewritten) : std::string_view(req.body());
  auto t0 = core::SteadyClock::now();
  AttemptOptions options{may_retry, x.capture_ids, {}};
  if (x.capture_ids) {
    options.on_ids = [&x](const core::AnswerIds& ids) { pipeline::remember_answer(x, ids, x.clock.steady_ms()); };
  }
  auto r = co_await attempt(client, req, body, ctx, w.upstream_env(), backend, keep_alive, std::move(options));
  auto verdict = judge(r, ctx, x.creates);
  auto done = x.clock.steady_ms();
  if (r.status == 429) lease.state().throttle(done + cooldown(r.signals, r.body_head, x.config().routing));
  lease.report(verdict.outcome, done);
  ctx.attempts.push_back(pipeline::AttemptLog{ctx.backend, r.status, verdict.reason, core::micros_since(t0)});
  if (r.kind == AttemptResult::Kind::kRelayed) {
    auto charge = ctx.charge;
    pipeline::note_answer(x, r.created_id, done);
    if (x.shared && !x.claimed.empty() && co_await claim_lost(w, x)) ctx.charge = charge;  // another replica's
    co_return Step::kRelayed;
  }
  using Mark = routing::TriedBackends::Mark;
  at.tried.mark(lease->backend, r.status == 429 ? Mark::kThrottled : Mark::kFailed);
  auto reason = verdict.retry;
  at.last = std::move(r);
  if (!reason || !may_retry || !within_retry_deadline(x)) co_return Step::kStop;
  if (client_closed(beast::get_lowest_layer(client.stream).socket())) co_return Step::kClientGone;
  at.pending_retry.emplace(ctx.series, *reason);
  co_return Step::kRetry;
}

/// No attempt was relayed: the routing answer (429/503), the last backend's held answer, or a
/// gateway error for its failure.
template <class Stream>
net::awaitable<bool> answer_unrelayed(Client<Stream> client, const Request& req, Exchange& x,
                                      Attempts& at, bool keep_alive) {
  auto now = x.clock.steady_ms();
  if (!at.last) co_return co_await send_reply(client, req, x.ctx, pipeline::no_backend(x, now), keep_alive);
  if (at.last->kind == AttemptResult::Kind::kHeld) {
    // Every backend throttled: one 429 that names the earliest recovery beats the last backend's.
    auto earliest = routing::earliest_recovery(x.route->route, x.snap.slots, now, x.only, x.allowed.span());
    if (at.last->status == 429 && !(earliest && *earliest <= now)) {
      co_return co_await send_reply(client, req, x.ctx, pipeline::no_backend(x, now), keep_alive);
    }
    co_return co_await send_held(client, x.ctx, at.last->held, keep_alive, req.version());
  }
  co_return co_await respond_failure(client, x.ctx, *at.last->error, keep_alive, req.version());
}

bool client_gone(RequestContext& ctx) {
  ctx.outcome = pipeline::Outcome::kClientGone;
  ctx.error = "client_gone";
  return false;  // the connection closes
}

template <class Stream>
net::awaitable<bool> forward(Worker& w, Client<Stream> client, const Request& req, Exchange& x,
                             bool keep_alive) {
  Attempts at(x);
  routing::LeaseHandle handed;  // a backend the scheduler took for this request
  for (;;) {
    auto lease = handed ? std::move(handed) : pick(w, x, at);
    if (!lease && may_wait(x, at)) {
      auto next = co_await wait_turn(w, client, x, at);
      if (next.reply) co_return co_await send_reply(client, req, x.ctx, *next.reply, keep_alive);
      if (next.gone) co_return client_gone(x.ctx);
      if (next.lease) {
        handed = std::move(next.lease);
        continue;
      }
    }
    if (!lease) break;
    ++at.count;
    if (!begin_retry(w, x, at)) break;
    switch (co_await attempt_on(w, client, req, x, at, std::move(lease), keep_alive)) {
      case Step::kRelayed: co_return keep_alive;
      case Step::kRetry: continue;
      case Step::kClientGone: co_return client_gone(x.ctx);
      case Step::kStop: break;
    }
    break;
  }
  co_return co_await answer_unrelayed(client, req, x, at, keep_alive);
}

}  // namespace

}  // namespace tollgate::server

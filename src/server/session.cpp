// Client connections: accept, read requests (with size and time limits), classify each once, run
// the pipeline, forward, and always finish with metrics and an access-log line.

#include <boost/asio/steady_timer.hpp>
#include <ctime>

#include "proxy/forwarder.hpp"
#include "proxy/net.hpp"
#include "server/worker.hpp"
#include "tollgate/core/api_call.hpp"
#include "tollgate/core/request_context.hpp"
#include "tollgate/metrics/logging.hpp"

namespace tollgate::server {

using namespace proxy;  // net, beast, http, streams, use_tuple
using core::RequestContext;

namespace {

std::int64_t micros_since(core::SteadyClock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(core::SteadyClock::now() - t).count();
}

std::string utc_now_iso() {
  auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

/// Always runs once per request, on every path: metrics and the access log.
void finish(Worker& w, RequestContext& ctx) {
  auto& stats = w.stats();
  auto& cells = stats.route(ctx.series);
  auto duration = micros_since(ctx.start);
  cells.requests[static_cast<std::size_t>(metrics::status_class(ctx.status))].add();
  cells.duration.observe_micros(duration);
  if (ctx.ttfb_us >= 0) cells.ttfb.observe_micros(ctx.ttfb_us);
  const auto& u = ctx.usage;
  if (u.present) {
    cells.tokens[static_cast<std::size_t>(metrics::TokenType::kPrompt)].add(u.prompt);
    cells.tokens[static_cast<std::size_t>(metrics::TokenType::kCompletion)].add(u.completion);
    cells.tokens[static_cast<std::size_t>(metrics::TokenType::kCached)].add(u.cached);
    cells.tokens[static_cast<std::size_t>(metrics::TokenType::kReasoning)].add(u.reasoning);
  } else if (ctx.usage_expected && ctx.status / 100 == 2 && ctx.outcome == std::string_view("ok")) {
    cells.usage_missing.add();
  }
  stats.in_flight.add(-1);
  auto& log = w.access_log();
  if (!log.enabled()) return;
  core::JsonFields f;
  f.add("time", utc_now_iso())
      .add("request_id", ctx.request_id)
      .add("method", ctx.method)
      .add("path", ctx.path)
      .add("api_version", ctx.call.api_version)
      .add("operation", core::to_string(ctx.call.op))
      .add("deployment", ctx.deployment ? std::string_view(ctx.deployment->name) : std::string_view())
      .add("backend", ctx.backend)
      .add("client", ctx.client)
      .add("tenant", ctx.tenant)
      .add("status", ctx.status)
      .add("upstream_status", ctx.upstream_status)
      .add("stream", ctx.call.stream)
      .add_ms("duration_ms", duration);
  if (ctx.ttfb_us >= 0) {
    f.add_ms("ttfb_ms", ctx.ttfb_us);
  } else {
    f.add_raw("ttfb_ms", "null");  // no backend answered
  }
  f
      .add("prompt_tokens", u.prompt)
      .add("completion_tokens", u.completion)
      .add("total_tokens", u.total)
      .add("cached_tokens", u.cached)
      .add("reasoning_tokens", u.reasoning)
      .add("usage_reported", u.present)
      .add("bytes_in", ctx.bytes_in)
      .add("bytes_out", ctx.bytes_out)
      .add("outcome", ctx.outcome)
      .add("error", ctx.error)
      .add("remote", ctx.remote)
      .add("user_agent", ctx.user_agent);
  log.write(f);
}

core::HttpError body_too_large(std::size_t limit) {
  return {413, "request_too_large",
          "the request body exceeds the limit of " + std::to_string(limit) + " bytes", {}, {}};
}

bool is_inference(core::Operation op) {
  return op == core::Operation::kChatCompletions || op == core::Operation::kCompletions ||
         op == core::Operation::kEmbeddings || op == core::Operation::kResponses;
}

/// One request through the fixed pipeline. Returns whether to keep the connection.
template <class Stream>
net::awaitable<bool> handle(Worker& w, Client<Stream> client, Request& req, RequestContext& ctx,
                            std::shared_ptr<const Snapshot> snap) {
  bool keep_alive = req.keep_alive() && !w.draining();
  const auto& cfg = *snap->config;
  auto content_type = req[http::field::content_type];
  auto classified = core::classify(req.method_string(), req.target(), content_type, req.body());
  ctx.call = std::move(classified.call);
  if (classified.error) {
    ctx.outcome = "rejected";
    ctx.error = "bad_request";
    co_return co_await respond(client, ctx, classified.error->status, classified.error->body(),
                               keep_alive, req.version());
  }
  if (ctx.call.op == core::Operation::kModels) {
    co_return co_await respond(client, ctx, 200, core::models_list(cfg), keep_alive, req.version());
  }

  // Router: the deployment a client named, and its route (pools in priority order).
  ctx.deployment = cfg.find_deployment(ctx.call.deployment);
  if (ctx.deployment == nullptr) {
    ctx.outcome = "rejected";
    ctx.error = "unknown_deployment";
    auto e = core::not_found("DeploymentNotFound",
                             "The API deployment for this resource does not exist.");
    co_return co_await respond(client, ctx, 404, e.body(), keep_alive, req.version());
  }
  auto d = cfg.deployment_index(*ctx.deployment);
  // Balancer: the first backend of the first tier (balancing across many is routing's job).
  auto b = ctx.deployment->pools.front().backends.front();
  const auto& backend = snap->backends[b];
  ctx.series = snap->route_series[d][0][0];
  ctx.backend = backend.config->name;
  // Streams carry usage only when asked for (stream_options.include_usage).
  ctx.usage_expected = is_inference(ctx.call.op) && (!ctx.call.stream || ctx.call.include_usage);

  // Forwarder.
  auto rewritten = core::rewrite_body(ctx.call, *backend.config);
  std::string_view body = rewritten ? std::string_view(*rewritten) : std::string_view(req.body());
  co_return co_await forward(client, req, body, ctx, w, backend, keep_alive);
}

/// After an error answer on a request whose body was not read, keep reading (and discarding) for
/// a short while so the client sees the answer rather than a reset (nginx's lingering close).
template <class Stream>
net::awaitable<void> linger_close(Stream& stream, Deadline& deadline) {
  boost::system::error_code ec;
  beast::get_lowest_layer(stream).socket().shutdown(tcp::socket::shutdown_send, ec);
  std::array<char, 16 * 1024> sink;
  std::size_t total = 0;
  deadline.after(std::chrono::seconds(2));
  while (total < (8u << 20)) {
    auto [rec, n] = co_await beast::get_lowest_layer(stream).async_read_some(
        net::buffer(sink), use_tuple);
    if (rec) break;
    total += n;
  }
}

template <class Stream>
net::awaitable<void> run_session(Worker& w, Stream stream, std::string remote) {
  auto& stats = w.stats();
  stats.open_connections.add(1);
  stats.connections_total.add();
  auto entry = w.register_session([&stream] { beast::get_lowest_layer(stream).cancel(); });
  struct Exit {
    Worker& w;
    std::list<Worker::SessionEntry>::iterator it;
    ~Exit() {
      w.unregister_session(it);
      w.stats().open_connections.add(-1);
    }
  } exit_guard{w, entry};

  Deadline deadline(beast::get_lowest_layer(stream).socket());
  Client<Stream> client{stream, deadline};
  beast::flat_buffer buffer;
  buffer.reserve(8 * 1024);  // Beast reads at most the free capacity: 512 B steps cost syscalls
  bool first = true;
  while (!w.draining()) {
    auto snap = w.snapshot();
    const auto limits = snap->config->server.limits;  // a copy: snap is refreshed below
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(limits.max_header_size));
    parser.body_limit(limits.max_request_body);
    entry->idle = true;
    deadline.after(first ? limits.header_timeout : limits.idle_timeout);
    auto [ec, hn] = co_await http::async_read_header(stream, buffer, parser, use_tuple);
    entry->idle = false;
    first = false;
    // The request runs on the newest snapshot as of its arrival (not of the connection's last
    // request), and keeps it to its end.
    snap = w.snapshot();

    RequestContext ctx;
    ctx.start = core::SteadyClock::now();
    ctx.remote = remote;
    ctx.series = snap->unrouted_series;
    if (ec) {
      // Silence for closes and timeouts between requests (a Deadline cancels: operation_aborted);
      // an answer for malformed requests.
      if (ec == http::error::end_of_stream || ec == net::error::eof ||
          ec == net::error::operation_aborted || ec == beast::error::timeout ||
          ec == net::error::connection_reset || hn == 0) {
        co_return;
      }
      stats.in_flight.add(1);
      ctx.request_id = core::new_request_id();
      ctx.outcome = "rejected";
      core::HttpError e = core::bad_request("malformed HTTP request");
      ctx.error = "bad_request";
      if (ec == http::error::header_limit) {
        e = core::HttpError{431, "header_too_large", "the request header is too large", {}, {}};
        ctx.error = "header_too_large";
      } else if (ec == http::error::body_limit) {  // Content-Length above the limit
        e = body_too_large(limits.max_request_body);
        ctx.error = "body_too_large";
      }
      co_await respond(client, ctx, e.status, e.body(), false);
      finish(w, ctx);
      co_await linger_close(stream, deadline);
      co_return;
    }
    stats.in_flight.add(1);
    auto& header = parser.get();
    auto rid = header["x-request-id"];
    ctx.request_id = core::acceptable_request_id(rid) ? std::string(rid) : core::new_request_id();
    ctx.method = std::string(header.method_string());
    auto target = header.target();
    ctx.path = std::string(target.substr(0, target.find('?')));
    ctx.user_agent = std::string(header[http::field::user_agent].substr(0, 256));

    auto length = parser.content_length();
    if (length && *length > limits.max_request_body) {
      ctx.outcome = "rejected";
      ctx.error = "body_too_large";
      co_await respond(client, ctx, 413, body_too_large(limits.max_request_body).body(), false,
                       header.version());
      finish(w, ctx);
      co_await linger_close(stream, deadline);
      co_return;
    }
    if (beast::iequals(header[http::field::expect], "100-continue")) {
      http::response<http::empty_body> cont{http::status::continue_, header.version()};
      co_await http::async_write(stream, cont, use_tuple);
    }
    boost::system::error_code bec;
    std::size_t bn = parse_buffered(parser, buffer, bec);
    if (!bec && !parser.is_done()) {
      deadline.after(limits.header_timeout);
      auto [ec, n] = co_await http::async_read(stream, buffer, parser, use_tuple);
      bec = ec;
      bn += n;
    }
    ctx.bytes_in = hn + bn;
    if (bec) {
      bool too_big = bec == http::error::body_limit;
      ctx.outcome = "rejected";
      ctx.error = too_big ? "body_too_large" : "incomplete_request";
      if (too_big) {
        co_await respond(client, ctx, 413, body_too_large(limits.max_request_body).body(), false,
                         header.version());
        finish(w, ctx);
        co_await linger_close(stream, deadline);
        co_return;
      } else if (bec != net::error::operation_aborted && bec != beast::error::timeout &&
                 bec != http::error::partial_message && bec != net::error::eof) {
        co_await respond(client, ctx, 400, core::bad_request("malformed HTTP request").body(),
                         false, header.version());
      }
      finish(w, ctx);
      co_return;
    }
    auto req = parser.release();
    bool keep = co_await handle(w, client, req, ctx, snap);
    finish(w, ctx);
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

struct LogAndCount {
  const char* what;
  void operator()(std::exception_ptr e) const {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      metrics::log_error("coroutine failed", core::JsonFields().add("task", what).add("error", ex.what()));
    }
  }
};

net::awaitable<void> accept_loop_impl(Worker& w, Listener& l) {
  for (;;) {
    auto [ec, sock] = co_await l.acceptor.async_accept(use_tuple);
    if (ec) {
      if (ec == net::error::operation_aborted || !l.acceptor.is_open()) co_return;
      // Out of file descriptors or similar: back off instead of spinning.
      net::steady_timer t(w.io(), std::chrono::milliseconds(50));
      co_await t.async_wait(use_tuple);
      continue;
    }
    boost::system::error_code opt_ec;
    sock.set_option(tcp::no_delay(true), opt_ec);
    auto ep = sock.remote_endpoint(opt_ec);
    std::string remote = opt_ec ? std::string() : ep.address().to_string() + ":" + std::to_string(ep.port());
    if (l.tls) {
      net::co_spawn(w.io(), run_tls_session(w, std::move(sock), l.tls, std::move(remote)),
                    LogAndCount{"tls session"});
    } else {
      net::co_spawn(w.io(), run_session(w, PlainStream(std::move(sock)), std::move(remote)),
                    LogAndCount{"session"});
    }
  }
}

}  // namespace

void Worker::accept_loop(Listener& l) {
  net::co_spawn(io_, accept_loop_impl(*this, l), LogAndCount{"accept"});
}

}  // namespace tollgate::server

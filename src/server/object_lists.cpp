// A list call's I/O: rounds of pages asked of the backends in parallel, then one answer. The
// decisions (which backends' next pages matter, whose objects to keep, the merge) are the plain
// functions of server/pipeline/lists.cpp.

#include "server/object_lists.hpp"

#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>

#include "server/pipeline/stages.hpp"
#include "server/worker.hpp"

namespace tollgate::server {

using namespace proxy;  // net, beast, http, streams, use_tuple
using metrics::UpstreamError;
using pipeline::BackendList;

namespace {

// A page bigger than this is a failure of its backend; all pages of one list call together
// stop at the second bound (the backends still unread then make has_more conservative).
constexpr std::size_t kMaxPageBytes = 4u << 20;
constexpr std::size_t kMaxListBytes = 32u << 20;

/// How asking a backend for one page ended: a page, or a failure (`error`: no usable answer;
/// else the backend's non-2xx `status` and `body`).
struct PageResult {
  std::optional<pipeline::ListPage> page;
  std::optional<UpstreamError> error;
  int status = 0;
  std::string body;
  std::size_t bytes = 0;
  std::int64_t duration_us = 0;
};

/// One request on one connection: the answer's status and body, or the error.
struct Exchanged {
  std::optional<UpstreamError> error;
  bool answered = false;  // the backend sent its header
  bool reusable = false;
  int status = 0;
  std::string body;
  std::size_t bytes = 0;
};

UpstreamError read_error(boost::system::error_code ec, const Deadline& deadline,
                         UpstreamError timeout) {
  if (deadline.expired()) return timeout;
  if (ec == http::error::end_of_stream || ec == net::error::eof ||
      ec == net::error::connection_reset) {
    return UpstreamError::kReset;
  }
  return UpstreamError::kProtocol;
}

// The request's write and the header are bounded by the backend's first-byte timeout, each
// read of the body by its idle timeout.
template <class S>
net::awaitable<Exchanged> exchange(S& stream, UpstreamConn& conn, const std::string& head,
                                   const config::BackendTimeouts& timeouts) {
  Exchanged out;
  auto& deadline = *conn.deadline;
  deadline.after(timeouts.first_byte);
  auto [wec, wn] = co_await net::async_write(stream, net::buffer(head), use_tuple);
  if (wec) {
    out.error = deadline.expired() ? UpstreamError::kFirstByteTimeout : UpstreamError::kWrite;
    co_return out;
  }
  http::response_parser<http::string_body> parser;
  parser.body_limit(kMaxPageBytes);
  auto [hec, hn] = co_await http::async_read_header(stream, conn.buffer, parser, use_tuple);
  out.bytes = hn;
  if (hec) {
    out.error = read_error(hec, deadline, UpstreamError::kFirstByteTimeout);
    co_return out;
  }
  out.answered = true;
  while (!parser.is_done()) {
    deadline.after(timeouts.idle_between_chunks);
    auto [ec, n] = co_await http::async_read_some(stream, conn.buffer, parser, use_tuple);
    out.bytes += n;
    if (ec) {
      out.error = read_error(ec, deadline, UpstreamError::kIdleTimeout);
      co_return out;
    }
  }
  deadline.never();
  auto& res = parser.get();
  out.status = static_cast<int>(res.result_int());
  out.reusable = res.keep_alive() && conn.buffer.size() == 0;
  out.body = std::move(res.body());
  co_return out;
}

PageResult read_page(Exchanged ex) {
  PageResult r;
  r.bytes = ex.bytes;
  r.status = ex.status;
  if (ex.error) {
    r.error = ex.error;
  } else if (ex.status < 200 || ex.status > 299) {
    r.body = std::move(ex.body);
  } else {
    r.page = pipeline::parse_list_page(ex.body);
    if (!r.page) r.error = UpstreamError::kProtocol;
  }
  return r;
}

/// Asks `backend` for one page (`head`: the whole request), on a pooled connection or a new
/// one. A pooled connection found closed is followed by one new connection (a list is safe to
/// ask again).
net::awaitable<PageResult> fetch_page(UpstreamEnv env, const pipeline::BackendRuntime& backend,
                                      std::string head, std::uint32_t series) {
  const auto& cfg = *backend.config;
  auto& pool = env.pools.get(backend.pool_id);
  auto t0 = core::SteadyClock::now();
  PageResult out;
  for (int round = 0; round < 2; ++round) {
    std::int64_t idle_delta = 0;
    auto conn = round == 0 ? pool.take(SteadyClock::now(), idle_delta) : nullptr;
    env.stats.upstream_idle.add(idle_delta);
    bool pooled = conn != nullptr;
    if (!conn) {
      std::optional<UpstreamError> err;
      conn = co_await connect_backend(env, backend, err);
      if (!conn) {
        out.error = err;
        break;
      }
    }
    ++conn->uses;
    Exchanged ex;
    if (auto* plain = std::get_if<PlainStream>(&conn->stream)) {
      ex = co_await exchange(*plain, *conn, head, cfg.timeouts);
    } else {
      ex = co_await exchange(std::get<TlsStream>(conn->stream), *conn, head, cfg.timeouts);
    }
    // A pooled connection the backend closed while idle fails the write, or ends before any
    // answer: ask again on a new one. A timeout is the backend's failure, not the connection's.
    bool stale = ex.error == UpstreamError::kWrite || ex.error == UpstreamError::kReset;
    if (pooled && !ex.answered && stale) continue;
    if (!ex.error && ex.reusable &&
        pool.put(std::move(conn), PoolLimits{cfg.max_idle_connections, cfg.keepalive_idle},
                 SteadyClock::now())) {
      env.stats.upstream_idle.add(1);
    }
    out = read_page(std::move(ex));
    break;
  }
  if (out.error && series != pipeline::kNoSeries)
    env.stats.route(series).upstream_errors[*out.error].add();
  out.duration_us = core::micros_since(t0);
  co_return out;
}

/// The request for `list`'s next page on backend `b`: the call's surface and collection, the
/// page's query, the backend's credential, and the client's headers as attempt() forwards them.
std::string page_head(const Request& req, const pipeline::Exchange& x, const BackendList& list,
                      const config::BackendConfig& cfg, const Credential& credential) {
  core::ApiCall call;
  call.surface = x.ctx.call.surface;
  call.op_path = x.ctx.call.op_path;
  call.query = pipeline::page_query(*x.list, list);
  std::string h;
  append_request_head(h, "GET", core::upstream_target(call, cfg), req, x.ctx, cfg, credential);
  h += "\r\n";
  return h;
}

/// One list call's state: the backends asked, what each listed, the first failure of each.
struct Fanout {
  std::vector<std::uint32_t> backends;
  std::vector<BackendList> lists;
  std::vector<std::optional<PageResult>> failed;
  std::size_t bytes = 0;
};

using PageOp = decltype(net::co_spawn(std::declval<net::io_context&>(),
                                      std::declval<net::awaitable<PageResult>>(), net::deferred));

/// Asks the backends `round` (indexes into f.backends) for their next pages, in parallel.
net::awaitable<std::vector<PageResult>> ask_round(Worker& w, const Request& req,
                                                  const pipeline::Exchange& x, const Fanout& f,
                                                  const std::vector<std::size_t>& round) {
  std::vector<PageOp> ops;
  std::vector<PageResult> results(round.size());  // no credential: never asked
  std::vector<std::size_t> asked;
  for (std::size_t k = 0; k < round.size(); ++k) {
    auto b = f.backends[round[k]];
    const auto& backend = x.snap.backends[b];
    auto credential = backend_credential(backend);
    if (!credential) {
      results[k].error = UpstreamError::kCredential;
      continue;
    }
    auto head = page_head(req, x, f.lists[round[k]], *backend.config, *credential);
    ops.push_back(net::co_spawn(
        w.io(), fetch_page(w.upstream_env(), backend, std::move(head), x.route->series[b]),
        net::deferred));
    asked.push_back(k);
  }
  if (ops.empty()) co_return results;
  auto [order, errors, pages] =
      co_await net::experimental::make_parallel_group(std::move(ops))
          .async_wait(net::experimental::wait_for_all(), net::use_awaitable);
  for (std::size_t i = 0; i < asked.size(); ++i) {
    if (errors[i]) std::rethrow_exception(errors[i]);  // a bug (or bad_alloc): the request fails
    results[asked[i]] = std::move(pages[i]);
  }
  co_return results;
}

std::string_view page_reason(const PageResult& r) {
  if (r.error) return metrics::to_string(*r.error);
  return r.page ? std::string_view("ok") : std::string_view("bad_status");
}

/// Whose objects a backend's page keeps: the caller's own, made on that backend.
pipeline::KeepObject keep_for(pipeline::Exchange& x, std::string_view backend) {
  return [&x, backend, now = x.clock.steady_ms()](std::string_view id) {
    auto owner = x.snap.affinity->find(id, now);
    return owner && owner->backend == backend && pipeline::may_use(x, *owner);
  };
}

/// Asks round after round until no backend's next page matters, or a bound is reached: the
/// bytes read, or the deployment's retry deadline (after the first round: the time a request
/// may spend on backends).
net::awaitable<void> collect(Worker& w, const Request& req, pipeline::Exchange& x, Fanout& f) {
  for (bool first = true;; first = false) {
    std::vector<std::size_t> round;
    for (std::size_t i = 0; i < f.backends.size(); ++i) {
      if (!f.failed[i] && pipeline::wants_more(f.lists, i, x.list->query)) round.push_back(i);
    }
    bool late = core::SteadyClock::now() - x.ctx.start >= x.ctx.deployment->retry.deadline;
    if (round.empty() || f.bytes >= kMaxListBytes || (late && !first)) co_return;
    auto pages = co_await ask_round(w, req, x, f, round);
    for (std::size_t k = 0; k < round.size(); ++k) {
      auto i = round[k];
      auto& r = pages[k];
      const auto& name = x.snap.backends[f.backends[i]].config->name;
      f.bytes += r.bytes;
      x.ctx.attempts.push_back(pipeline::AttemptLog{name, r.status, page_reason(r), r.duration_us});
      if (r.page) {
        pipeline::absorb(f.lists[i], std::move(*r.page), keep_for(x, name));
      } else {
        f.failed[i] = std::move(r);
      }
    }
  }
}

/// No backend answered a page: the first backend's error answer, else a 502/504 for its failure.
template <class Stream>
net::awaitable<bool> answer_failed(Client<Stream> client, const Request& req, pipeline::Exchange& x,
                                   const Fanout& f, bool keep_alive) {
  auto& ctx = x.ctx;
  for (const auto& r : f.failed) {
    if (r && !r->error) {
      ctx.outcome = pipeline::Outcome::kOk;
      ctx.upstream_status = r->status;
      co_return co_await respond(client, ctx, r->status, r->body, keep_alive, req.version());
    }
  }
  co_return co_await respond_failure(client, ctx, *f.failed.front()->error, keep_alive,
                                     req.version());
}

}  // namespace

template <class Stream>
net::awaitable<bool> answer_list(Worker& w, Client<Stream> client, const Request& req,
                                 pipeline::Exchange& x, bool keep_alive) {
  Fanout f;
  for (auto b : x.list->backends) {
    if (!x.only || *x.only == b) f.backends.push_back(b);
  }
  if (f.backends.empty()) f.backends = x.list->backends;  // (pin already checks its backend)
  f.lists.resize(f.backends.size());
  f.failed.resize(f.backends.size());
  co_await collect(w, req, x, f);
  std::vector<BackendList> answered;
  std::string partial;
  for (std::size_t i = 0; i < f.backends.size(); ++i) {
    if (!f.failed[i]) {
      answered.push_back(std::move(f.lists[i]));
      continue;
    }
    if (!partial.empty()) partial += ", ";
    partial += x.snap.backends[f.backends[i]].config->name;
  }
  if (answered.empty()) co_return co_await answer_failed(client, req, x, f, keep_alive);
  pipeline::HeaderList headers;
  if (!partial.empty()) headers.emplace_back("x-tollgate-partial", std::move(partial));
  x.ctx.outcome = pipeline::Outcome::kOk;
  x.ctx.upstream_status = 200;
  co_return co_await respond(client, x.ctx, 200, pipeline::merge_lists(answered, x.list->query),
                             keep_alive, req.version(), "application/json", headers);
}

template net::awaitable<bool> answer_list<PlainStream>(Worker&, Client<PlainStream>, const Request&,
                                                       pipeline::Exchange&, bool);
template net::awaitable<bool> answer_list<TlsStream>(Worker&, Client<TlsStream>, const Request&,
                                                     pipeline::Exchange&, bool);

}  // namespace tollgate::server

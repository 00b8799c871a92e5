// The only Beast translation unit of the mock: acceptors, sessions, TLS and the write loop.
// Beast is used for request parsing only; replies are pre-rendered bytes (handler.cpp) written
// with plain asio::async_write, each SSE event as its own write.

#include "mock/server.hpp"

#include <sys/socket.h>

// GCC 12 false positive: it pairs Asio's awaitable-frame operator new (thread_info_base recycling
// allocator) with the std::free inside aligned_delete after inlining the coroutine frame's
// operator delete. The allocation functions do match (asio/detail/memory.hpp).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cerrno>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <thread>
#include <unordered_set>
#include <vector>

#include "mock/handler.hpp"

namespace tollgate::mock {
namespace {

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = net::ip::tcp;
using boost::system::error_code;
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

using reuse_port = net::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>;

constexpr std::size_t kHeaderLimit = 64 * 1024;
constexpr std::uint64_t kBodyLimit = 16 * 1024 * 1024;

void log_error(const char* what, const std::string& detail) {
  std::fprintf(stderr,
               "{\"level\":\"error\",\"msg\":\"%s\",\"listener\":\"mock\",\"detail\":\"%s\"}\n",
               what, detail.c_str());
}

tcp::socket& lowest(tcp::socket& s) {
  return s;
}
tcp::socket& lowest(ssl::stream<tcp::socket>& s) {
  return s.next_layer();
}

struct ConnHandle {
  tcp::socket* socket;
  net::steady_timer* timer;
};

// Set by a peer watcher while a stream is paced; see watch_peer().
struct PeerWatch {
  bool gone = false;
  bool done = false;  // the stream ended: the watcher must not touch anything
  net::steady_timer* timer = nullptr;
};

}  // namespace

namespace server_detail {

// One worker: its io_context, acceptor, live connections and per-worker handler scratch.
// Every member is touched by the worker's own thread only (after start()).
struct Worker {
  Worker(Handler& h, WorkerStats& stats, unsigned index, ssl::context* tls)
      : handler(h),
        ctx(stats, std::random_device{}() ^ (std::uint64_t{index} << 32)),
        tls(tls),
        ioc(std::make_unique<net::io_context>(1)) {}

  ~Worker() {
    // Destroy the io_context (and any coroutine frame it still holds) while the rest of the
    // worker is alive: frames unregister their ConnHandle from `conns` on destruction.
    watchdog.reset();
    acceptor.reset();
    ioc.reset();
  }

  void shutdown() {
    stopping = true;
    error_code ec;
    if (acceptor) acceptor->close(ec);
    for (ConnHandle* c : conns) {
      c->socket->close(ec);
      c->timer->cancel();
    }
    if (!conns.empty()) {
      // Sessions end as soon as their pending operation fails; force the loop down otherwise.
      watchdog.emplace(*ioc);
      watchdog->expires_after(std::chrono::seconds(2));
      watchdog->async_wait([this](error_code e) {
        if (!e) ioc->stop();
      });
    }
  }

  void connection_closed(ConnHandle* c) {
    conns.erase(c);
    if (stopping && conns.empty() && watchdog) watchdog->cancel();
  }

  Handler& handler;
  WorkerContext ctx;
  ssl::context* tls;
  std::unordered_set<ConnHandle*> conns;
  bool stopping = false;
  std::unique_ptr<net::io_context> ioc;
  std::optional<tcp::acceptor> acceptor;
  std::optional<net::steady_timer> watchdog;
  std::thread thread;
};

}  // namespace server_detail

namespace {

using server_detail::Worker;

// Registers a connection with its worker for shutdown, and counts it.
class ConnGuard {
 public:
  ConnGuard(Worker& w, tcp::socket& s, net::steady_timer& t) : w_(w), handle_{&s, &t} {
    w_.conns.insert(&handle_);
    w_.ctx.stats.connections_total.fetch_add(1, std::memory_order_relaxed);
    w_.ctx.stats.connections_open.fetch_add(1, std::memory_order_relaxed);
  }
  ~ConnGuard() {
    w_.ctx.stats.connections_open.fetch_sub(1, std::memory_order_relaxed);
    w_.connection_closed(&handle_);
  }
  ConnGuard(const ConnGuard&) = delete;
  ConnGuard& operator=(const ConnGuard&) = delete;

 private:
  Worker& w_;
  ConnHandle handle_;
};

struct LogException {
  const char* what;
  void operator()(std::exception_ptr e) const {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      log_error(what, ex.what());
    } catch (...) {
      log_error(what, "unknown exception");
    }
  }
};

// Sleeps `d`; false when the worker is stopping or the sleep was cut short (peer gone).
net::awaitable<bool> sleep_for(Worker& w, net::steady_timer& timer, std::chrono::milliseconds d) {
  if (w.stopping) co_return false;
  timer.expires_after(d);
  auto [ec] = co_await timer.async_wait(use_tuple);
  co_return !ec && !w.stopping;
}

// Watches a streaming connection for the peer going away while the session sleeps between
// events, so a paced stream stops promptly instead of at its next write.
net::awaitable<void> watch_peer(tcp::socket& socket, std::shared_ptr<PeerWatch> watch) {
  auto [ec] = co_await socket.async_wait(tcp::socket::wait_read, use_tuple);
  if (watch->done) co_return;  // the session moved on; `socket` may no longer exist
  bool gone = false;
  if (ec) {
    gone = ec != net::error::operation_aborted;
  } else {
    char c;
    ssize_t n = ::recv(socket.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    gone = n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
    // n > 0: the client sent bytes (pipelining, TLS alert): stop watching, writes will tell.
  }
  if (gone) {
    watch->gone = true;
    if (watch->timer) watch->timer->cancel();
  }
}

void abort_connection(tcp::socket& s, bool reset) {
  error_code ec;
  if (reset) s.set_option(net::socket_base::linger(true, 0), ec);
  s.close(ec);
}

std::string simple_reply(int status, std::string_view code, std::string_view message) {
  std::string body = std::string(R"({"error":{"code":")") + std::string(code) + R"(","message":")" +
                     std::string(message) + "\"}}";
  std::string out =
      "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason_phrase(status)) +
      "\r\ncontent-type: application/json\r\ncontent-length: " + std::to_string(body.size()) +
      "\r\nconnection: close\r\n\r\n";
  return out + body;
}

std::string chunk_size_line(std::size_t n) {
  char buf[24];
  int len = std::snprintf(buf, sizeof buf, "%zx\r\n", n);
  return std::string(buf, static_cast<std::size_t>(len));
}

template <class Stream>
net::awaitable<Outcome> carry_out(Worker& w, Stream& stream, Reply& r, net::steady_timer& timer) {
  tcp::socket& sock = lowest(stream);
  if (r.delay.count() > 0 && !co_await sleep_for(w, timer, r.delay)) co_return Outcome::ClientGone;

  switch (r.kind) {
    case Reply::Kind::Close:
      abort_connection(sock, r.reset);
      co_return Outcome::Done;

    case Reply::Kind::Hang: {
      // Never answer: drain whatever arrives until the peer closes or the mock stops.
      char scratch[4096];
      for (;;) {
        auto [ec, n] = co_await sock.async_read_some(net::buffer(scratch), use_tuple);
        if (ec || w.stopping) break;
      }
      co_return Outcome::Done;
    }

    case Reply::Kind::Full: {
      std::array<net::const_buffer, 2> bufs{net::buffer(r.head), net::buffer(r.body)};
      auto [ec, n] = co_await net::async_write(stream, bufs, use_tuple);
      co_return ec ? Outcome::ClientGone : Outcome::Done;
    }

    case Reply::Kind::Stream:
      break;
  }

  {
    auto [ec, n] = co_await net::async_write(stream, net::buffer(r.head), use_tuple);
    if (ec) co_return Outcome::ClientGone;
  }
  w.handler.stream_started(w.ctx);

  std::shared_ptr<PeerWatch> watch;
  if (r.pace.count() > 0) {
    watch = std::make_shared<PeerWatch>();
    watch->timer = &timer;
    net::co_spawn(stream.get_executor(), watch_peer(sock, watch), LogException{"peer watch"});
  }
  struct StopWatch {  // ends the watcher on every exit path
    std::shared_ptr<PeerWatch>& w;
    tcp::socket& s;
    ~StopWatch() {
      if (!w) return;
      w->done = true;
      w->timer = nullptr;
      error_code ec;
      s.cancel(ec);
    }
  } stop_watch{watch, sock};

  const StreamPlan& plan = r.stream;
  std::size_t sent_content = 0;
  for (std::size_t i = 0; i < plan.events.size(); ++i) {
    const bool content = i >= plan.first_content && i < plan.first_content + plan.content_events;
    // close_after_chunks: cut the stream after N content events (at the latest before the
    // finish chunk), without the terminating chunk.
    if (r.close_after && i >= plan.first_content &&
        (sent_content >= *r.close_after || i >= plan.first_content + plan.content_events)) {
      abort_connection(sock, r.reset);
      co_return Outcome::FaultClosed;
    }
    if (content && i > plan.first_content && r.pace.count() > 0) {
      if (!co_await sleep_for(w, timer, r.pace)) co_return Outcome::ClientGone;
    }
    if (watch && watch->gone) co_return Outcome::ClientGone;
    const std::string& e = plan.events[i];
    error_code ec;
    if (r.chunked) {
      std::string size = chunk_size_line(e.size());
      std::array<net::const_buffer, 3> bufs{net::buffer(size), net::buffer(e),
                                            net::buffer("\r\n", 2)};
      std::tie(ec, std::ignore) = co_await net::async_write(stream, bufs, use_tuple);
    } else {
      std::tie(ec, std::ignore) = co_await net::async_write(stream, net::buffer(e), use_tuple);
    }
    if (ec) co_return Outcome::ClientGone;
    if (content) ++sent_content;
  }
  if (r.chunked) {
    auto [ec, n] = co_await net::async_write(stream, net::buffer("0\r\n\r\n", 5), use_tuple);
    if (ec) co_return Outcome::ClientGone;
  }
  co_return Outcome::Done;
}

template <class Stream>
net::awaitable<void> run_session(Worker& w, Stream stream) {
  net::steady_timer timer(stream.get_executor());
  ConnGuard guard(w, lowest(stream), timer);

  if constexpr (std::is_same_v<Stream, ssl::stream<tcp::socket>>) {
    auto [ec] = co_await stream.async_handshake(ssl::stream_base::server, use_tuple);
    if (ec) co_return;
  }

  beast::flat_buffer buffer;
  std::vector<HeaderField> headers;
  headers.reserve(32);
  while (!w.stopping) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(kHeaderLimit);
    parser.body_limit(kBodyLimit);
    auto [ec, n] = co_await http::async_read_header(stream, buffer, parser, use_tuple);
    if (!ec && !parser.is_done()) {
      auto expect = parser.get()[http::field::expect];
      if (beast::iequals(expect, "100-continue")) {
        std::tie(ec, std::ignore) = co_await net::async_write(
            stream, net::buffer("HTTP/1.1 100 Continue\r\n\r\n", 25), use_tuple);
      }
      if (!ec)
        std::tie(ec, std::ignore) = co_await http::async_read(stream, buffer, parser, use_tuple);
    }
    if (ec) {
      std::string reply;
      if (ec == http::error::body_limit) {
        reply = simple_reply(413, "413", "Request body exceeds 16 MiB");
      } else if (ec == http::error::header_limit) {
        reply = simple_reply(431, "431", "Request headers too large");
      } else if (ec.category() == http::make_error_code(http::error::bad_method).category() &&
                 ec != http::error::end_of_stream && ec != http::error::partial_message) {
        reply = simple_reply(400, "400", "Malformed HTTP request");
      }
      if (!reply.empty() && !w.stopping) {
        co_await net::async_write(stream, net::buffer(reply), use_tuple);
        abort_connection(lowest(stream), false);
      }
      co_return;
    }

    auto& req = parser.get();
    headers.clear();
    auto sv = [](auto s) { return std::string_view(s.data(), s.size()); };
    for (const auto& f : req) headers.push_back(HeaderField{sv(f.name_string()), sv(f.value())});
    RequestView view{sv(req.method_string()), sv(req.target()),   headers, req.body(),
                     req.keep_alive(),        req.version() == 10};
    Reply reply = w.handler.handle(view, w.ctx);
    Outcome outcome = co_await carry_out(w, stream, reply, timer);
    w.handler.finish(reply, outcome, w.ctx);
    if (outcome != Outcome::Done || reply.close || reply.kind == Reply::Kind::Close ||
        reply.kind == Reply::Kind::Hang) {
      break;
    }
  }
  abort_connection(lowest(stream), false);
}

net::awaitable<void> accept_loop(Worker& w) {
  for (;;) {
    auto [ec, socket] = co_await w.acceptor->async_accept(use_tuple);
    if (w.stopping) co_return;
    if (ec) {
      if (ec == net::error::operation_aborted || ec == net::error::bad_descriptor) co_return;
      // EMFILE and friends: back off briefly instead of spinning.
      net::steady_timer t(*w.ioc, std::chrono::milliseconds(10));
      co_await t.async_wait(use_tuple);
      continue;
    }
    error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    if (w.tls) {
      net::co_spawn(*w.ioc, run_session(w, ssl::stream<tcp::socket>(std::move(socket), *w.tls)),
                    LogException{"session"});
    } else {
      net::co_spawn(*w.ioc, run_session(w, std::move(socket)), LogException{"session"});
    }
  }
}

tcp::endpoint resolve(const std::string& host, std::uint16_t port) {
  error_code ec;
  auto addr = net::ip::make_address(host, ec);
  if (!ec) return tcp::endpoint(addr, port);
  net::io_context ioc;
  tcp::resolver resolver(ioc);
  auto results = resolver.resolve(host, std::to_string(port), ec);
  if (ec || results.empty()) {
    throw std::runtime_error("cannot resolve listen host \"" + host + "\": " + ec.message());
  }
  for (const auto& r : results) {
    if (r.endpoint().address().is_v4()) return r.endpoint();
  }
  return results.begin()->endpoint();
}

}  // namespace

using server_detail::Worker;

struct MockServer::Impl {
  explicit Impl(Options o)
      : options(std::move(o)),
        state(options.name, options.capture, options.tpm, options.threads),
        handler(options, state) {}

  ~Impl() { stop(); }

  void start() {
    if (started) throw std::runtime_error("MockServer::start: already started");
    if (options.tls()) {
      tls.emplace(ssl::context::tls_server);
      tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::single_dh_use);
      error_code ec;
      tls->use_certificate_chain_file(options.tls_cert, ec);
      if (ec) throw std::runtime_error("--tls-cert " + options.tls_cert + ": " + ec.message());
      tls->use_private_key_file(options.tls_key, ssl::context::pem, ec);
      if (ec) throw std::runtime_error("--tls-key " + options.tls_key + ": " + ec.message());
    }
    tcp::endpoint ep = resolve(options.listen_host, options.listen_port);
    for (unsigned i = 0; i < options.threads; ++i) {
      auto w = std::make_unique<Worker>(handler, state.worker(i), i, tls ? &*tls : nullptr);
      w->acceptor.emplace(*w->ioc);
      error_code ec;
      w->acceptor->open(ep.protocol(), ec);
      if (!ec) w->acceptor->set_option(net::socket_base::reuse_address(true), ec);
      if (!ec && options.threads > 1) w->acceptor->set_option(reuse_port(true), ec);
      if (!ec) w->acceptor->bind(ep, ec);
      if (!ec) w->acceptor->listen(net::socket_base::max_listen_connections, ec);
      if (ec) {
        throw std::runtime_error("cannot listen on " + ep.address().to_string() + ":" +
                                 std::to_string(ep.port()) + ": " + ec.message());
      }
      if (i == 0) {
        ep = w->acceptor->local_endpoint();  // port 0 resolved: the others bind the same port
        bound = ep;
      }
      workers.push_back(std::move(w));
    }
    for (auto& w : workers) {
      Worker* wp = w.get();
      net::co_spawn(*wp->ioc, accept_loop(*wp), LogException{"acceptor"});
      wp->thread = std::thread([wp] {
        try {
          wp->ioc->run();
        } catch (const std::exception& e) {
          log_error("worker", e.what());
        }
      });
    }
    started = true;
  }

  void stop() {
    if (!started || stopped) return;
    stopped = true;
    for (auto& w : workers) {
      Worker* wp = w.get();
      net::post(*wp->ioc, [wp] { wp->shutdown(); });
    }
    for (auto& w : workers) {
      if (w->thread.joinable()) w->thread.join();
    }
  }

  Options options;
  State state;
  Handler handler;
  std::optional<ssl::context> tls;
  tcp::endpoint bound;
  bool started = false;  // owner: the thread calling start()/stop()
  bool stopped = false;
  std::vector<std::unique_ptr<Worker>> workers;  // destroyed first: they use the members above
};

MockServer::MockServer(Options options) : impl_(std::make_unique<Impl>(std::move(options))) {}
MockServer::~MockServer() = default;

void MockServer::start() {
  impl_->start();
}
void MockServer::stop() {
  impl_->stop();
}
std::uint16_t MockServer::port() const {
  return impl_->bound.port();
}
State& MockServer::state() {
  return impl_->state;
}
const Options& MockServer::options() const {
  return impl_->options;
}

std::string MockServer::address() const {
  const auto& ep = impl_->bound;
  if (ep.address().is_v6())
    return "[" + ep.address().to_string() + "]:" + std::to_string(ep.port());
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

}  // namespace tollgate::mock

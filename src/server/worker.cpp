#include "server/worker.hpp"

#include <chrono>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>

#include "proxy/net.hpp"
#include "proxy/upstream_pool.hpp"
#include "server/session.hpp"

namespace tollgate::server {

Worker::Worker(unsigned index, std::shared_ptr<metrics::AccessLog> access_log)
    : index_(index),
      access_log_(std::move(access_log)),
      rng_(static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
           (0x9E3779B97F4A7C15ULL * (index + 1))) {}

Worker::~Worker() {
  if (thread_.joinable()) {
    io_.stop();
    thread_.join();
  }
  // I/O objects go before io_ (declared after it, so destroyed first anyway: made explicit).
  pools_.clear();
  listeners_.clear();
  resolver_.reset();
}

void Worker::add_listener(boost::asio::ip::tcp::acceptor acceptor,
                          std::shared_ptr<boost::asio::ssl::context> tls) {
  listeners_.push_back(std::make_unique<Listener>(Listener{std::move(acceptor), std::move(tls)}));
}

void Worker::start(std::shared_ptr<const Snapshot> snapshot, std::shared_ptr<const AuthState> auth) {
  resolver_ = std::make_unique<proxy::Resolver>(io_.get_executor(), proxy::dns_settings(snapshot->config->dns));
  apply(std::move(snapshot));
  auth_ = std::move(auth);
  for (auto& l : listeners_) accept_loop(*l);
  sweep_loop();
  thread_ = std::thread([this] {
    auto guard = boost::asio::make_work_guard(io_);
    io_.run();
  });
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::publish(std::shared_ptr<const Snapshot> snapshot) {
  boost::asio::post(io_, [this, s = std::move(snapshot)]() mutable { apply(std::move(s)); });
}

void Worker::publish_auth(std::shared_ptr<const AuthState> auth) {
  boost::asio::post(io_, [this, a = std::move(auth)]() mutable { auth_ = std::move(a); });
}

void Worker::apply(std::shared_ptr<const Snapshot> snapshot) {
  pools_.reserve(snapshot->pool_count);
  snapshot_ = std::move(snapshot);
}

void Worker::begin_drain() {
  boost::asio::post(io_, [this] {
    draining_ = true;
    for (auto& l : listeners_) {
      boost::system::error_code ec;
      l->acceptor.close(ec);
    }
    for (auto& s : sessions_) {
      if (s.idle && s.close) s.close();
    }
  });
}

void Worker::stop() { io_.stop(); }

namespace {

boost::asio::awaitable<void> accept_loop_impl(Worker& w, Listener& l) {
  namespace net = boost::asio;
  using proxy::tcp;
  using proxy::use_tuple;
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
    spawn_session(w, std::move(sock), l.tls, std::move(remote));
  }
}

}  // namespace

namespace {

// How often idle upstream connections are checked: a backend's close is noticed (and our end
// closed, out of CLOSE_WAIT) within this, and keepalive_idle is kept to within this.
constexpr std::chrono::seconds kPoolSweepInterval{2};

boost::asio::awaitable<void> sweep_loop_impl(Worker& w) {
  boost::asio::steady_timer timer(w.io());
  for (;;) {
    timer.expires_after(kPoolSweepInterval);
    auto [ec] = co_await timer.async_wait(proxy::use_tuple);
    if (ec) co_return;
    auto closed = w.sweep_pools(std::chrono::steady_clock::now());
    w.stats().upstream_idle.add(-static_cast<std::int64_t>(closed));
  }
}

}  // namespace

void Worker::sweep_loop() {
  boost::asio::co_spawn(io_, sweep_loop_impl(*this),
                        metrics::LogFailure{"coroutine failed", "task", "pool sweep"});
}

void Worker::accept_loop(Listener& l) {
  boost::asio::co_spawn(io_, accept_loop_impl(*this, l),
                        metrics::LogFailure{"coroutine failed", "task", "accept"});
}

std::list<Worker::SessionEntry>::iterator Worker::register_session(std::function<void()> close) {
  sessions_.push_front(SessionEntry{true, std::move(close)});
  return sessions_.begin();
}

void Worker::unregister_session(std::list<SessionEntry>::iterator it) { sessions_.erase(it); }

}  // namespace tollgate::server

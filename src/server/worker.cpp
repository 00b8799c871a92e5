#include "server/worker.hpp"

#include <array>
#include <chrono>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>

#include "cluster/cluster_options.hpp"
#include "proxy/net.hpp"
#include "proxy/upstream_pool.hpp"
#include "server/framing.hpp"
#include "server/refuse_io.hpp"
#include "server/session.hpp"
#include "tollgate/core/errors.hpp"

namespace tollgate::server {

Worker::Worker(unsigned index, std::shared_ptr<metrics::AccessLog> access_log,
               SharedConnections& connections)
    : index_(index),
      access_log_(std::move(access_log)),
      connections_(connections),
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
  if (snapshot->config->cluster.enabled()) {
    shared_ = cluster::make_shared_limiter(io_.get_executor(), snapshot->config->cluster, stats_);
    if (shared_ && index_ == 0 && replicas_) shared_->heartbeat(cluster::replica_id(), replicas_);
    if (shared_) {
      objects_ = std::make_shared<cluster::SharedObjects>(shared_->redis(),
                                                          snapshot->config->cluster.key_prefix);
    }
  }
  apply(std::move(snapshot));
  auth_ = std::move(auth);
  for (auto& l : listeners_) accept_loop(*l);
  sweep_loop();
  thread_ = std::thread([this] {
    auto guard = boost::asio::make_work_guard(io_);
    cluster::SharedObjects::bind_to_this_thread(objects_.get());
    io_.run();
    cluster::SharedObjects::bind_to_this_thread(nullptr);
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
    if (shared_) shared_->drain();  // leases go back to the store with the next flush
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

namespace net = boost::asio;

using namespace proxy;  // net, beast, http, streams, use_tuple

metrics::AcceptError accept_error(const boost::system::error_code& ec) {
  using boost::system::errc::errc_t;
  using metrics::AcceptError;
  if (ec == errc_t::too_many_files_open) return AcceptError::kEmfile;
  if (ec == errc_t::too_many_files_open_in_system) return AcceptError::kEnfile;
  if (ec == errc_t::no_buffer_space) return AcceptError::kEnobufs;
  if (ec == errc_t::not_enough_memory) return AcceptError::kEnomem;
  return AcceptError::kOther;
}

// Counts a failed accept and logs it (at most once per AcceptHealth::kLogInterval across
// workers); /readyz says not ready until an accept of this worker succeeds again.
void accept_failed(Worker& w, const boost::system::error_code& ec) {
  auto reason = accept_error(ec);
  w.stats().accept_errors[reason].add();
  if (!w.connections().accept.failed(w.index(), w.clock().steady_ms())) return;
  metrics::log_error("cannot accept client connections; not ready until accepting works again "
                     "(logged at most once a minute)",
                     core::JsonFields()
                         .add("reason", metrics::to_string(reason))
                         .add("error", ec.message())
                         .add("worker", static_cast<std::uint64_t>(w.index())));
}

// The answer to a connection over server.limits.max_connections_per_ip (closed lingering: the
// client may have sent its request already).
Refusal too_many_connections() {
  return {429, "too_many_connections", "too_many_connections",
          "too many open connections from this address; retry when one has closed"};
}

net::awaitable<void> refuse_connection(tcp::socket sock, std::shared_ptr<net::ssl::context> tls) {
  if (!tls) {
    PlainStream stream(std::move(sock));
    co_await answer_and_linger(stream, too_many_connections());
    co_return;
  }
  TlsStream stream(std::move(sock), *tls);
  beast::get_lowest_layer(stream).expires_after(kLingerTime);
  auto [ec] = co_await stream.async_handshake(net::ssl::stream_base::server, use_tuple);
  if (!ec) co_await answer_and_linger(stream, too_many_connections());
}

// A slot under the connection's source address (an empty one when no cap is set or the peer is
// gone already), or nullopt: the address has its cap of connections open.
std::optional<AddressCounts::Slot> take_slot(Worker& w, const boost::system::error_code& ep_ec,
                                             const tcp::endpoint& ep) {
  auto cap = w.snapshot()->config->server.limits.max_connections_per_ip;
  if (ep_ec || cap == 0) return AddressCounts::Slot();
  return w.connections().per_address.try_take(ep.address(), cap);
}

net::awaitable<void> accept_loop_impl(Worker& w, Listener& l) {
  for (;;) {
    auto [ec, sock] = co_await l.acceptor.async_accept(use_tuple);
    if (ec) {
      if (ec == net::error::operation_aborted || !l.acceptor.is_open()) co_return;
      accept_failed(w, ec);
      net::steady_timer t(w.io(), kAcceptBackoff);
      co_await t.async_wait(use_tuple);
      continue;
    }
    w.connections().accept.succeeded(w.index());
    boost::system::error_code opt_ec;
    sock.set_option(tcp::no_delay(true), opt_ec);
    auto ep = sock.remote_endpoint(opt_ec);
    auto slot = take_slot(w, opt_ec, ep);
    if (!slot) {
      w.stats().connections_refused.add();
      net::co_spawn(w.io(), refuse_connection(std::move(sock), l.tls),
                    metrics::LogFailure{"coroutine failed", "task", "refuse connection"});
      continue;
    }
    std::string remote = opt_ec ? std::string() : ep.address().to_string() + ":" + std::to_string(ep.port());
    spawn_session(w, std::move(sock), l.tls, std::move(remote), std::move(*slot));
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

#include "cluster/redis_connection.hpp"

#include <array>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/write.hpp>
#include <optional>
#include <vector>

namespace tollgate::cluster {
namespace {

// Runs `on_expire` if the time runs out before this guard is destroyed. The timer's handler may
// run after the guard is gone: it then sees `armed` false and does nothing.
class ExpiryGuard {
 public:
  ExpiryGuard(const net::any_io_executor& ex, std::chrono::milliseconds d,
              std::function<void()> on_expire)
      : state_(std::make_shared<State>(ex, std::move(on_expire))) {
    state_->timer.expires_after(d);
    state_->timer.async_wait([s = state_](boost::system::error_code ec) {
      if (ec || !s->armed) return;
      s->fired = true;
      s->on_expire();
    });
  }
  ~ExpiryGuard() {
    state_->armed = false;
    state_->on_expire = nullptr;
    state_->timer.cancel();
  }
  ExpiryGuard(const ExpiryGuard&) = delete;
  ExpiryGuard& operator=(const ExpiryGuard&) = delete;
  bool fired() const { return state_->fired; }

 private:
  struct State {
    State(const net::any_io_executor& ex, std::function<void()> f)
        : timer(ex), on_expire(std::move(f)) {}
    net::steady_timer timer;
    std::function<void()> on_expire;
    bool armed = true;
    bool fired = false;
  };
  std::shared_ptr<State> state_;
};

// AUTH, SELECT and PING as needed, and what a refusal of each means.
struct SetupCommand {
  std::vector<std::string> argv;
  RedisFailure on_error;
};

std::vector<SetupCommand> setup_commands(const RedisAddress& a) {
  std::vector<SetupCommand> cmds;
  if (!a.password.empty()) {
    if (a.user.empty()) {
      cmds.push_back({{"AUTH", a.password}, RedisFailure::kAuth});
    } else {
      cmds.push_back({{"AUTH", a.user, a.password}, RedisFailure::kAuth});
    }
  }
  if (a.db != 0) cmds.push_back({{"SELECT", std::to_string(a.db)}, RedisFailure::kConnect});
  cmds.push_back({{"PING"}, RedisFailure::kProtocol});
  return cmds;
}

// The replies to `cmds`, in order; the first failure they mean, if any.
net::awaitable<std::optional<RedisFailure>> run_setup(RedisConnection& c,
                                                      const std::vector<SetupCommand>& cmds) {
  std::string out;
  for (const auto& cmd : cmds) {
    std::vector<std::string_view> argv(cmd.argv.begin(), cmd.argv.end());
    append_command(out, argv);
  }
  auto [wec, wn] = co_await c.stream.write(net::buffer(out));
  if (wec) co_return RedisFailure::kConnect;
  std::array<char, 1024> buf;
  std::optional<RedisFailure> failure;
  for (const auto& cmd : cmds) {
    RedisReply reply;
    auto status = c.decoder.next(reply);
    while (status == RedisDecoder::Status::kNeedMore) {
      auto [ec, n] = co_await c.stream.read_some(net::buffer(buf));
      if (ec) co_return RedisFailure::kConnect;
      if (!c.decoder.feed({buf.data(), n})) co_return RedisFailure::kProtocol;
      status = c.decoder.next(reply);
    }
    if (status == RedisDecoder::Status::kError) co_return RedisFailure::kProtocol;
    if (reply.is_error() && !failure)
      failure = reply.is_error("NOAUTH") ? RedisFailure::kAuth : cmd.on_error;
  }
  co_return failure;
}

// Resolves and connects `socket` (TCP_NODELAY set). The caller bounds it (by cancelling both).
net::awaitable<std::optional<RedisFailure>> connect_tcp(tcp::resolver& resolver,
                                                        tcp::socket& socket,
                                                        const RedisAddress& a) {
  auto [rec, endpoints] =
      co_await resolver.async_resolve(a.host, std::to_string(a.port), use_tuple);
  if (rec) co_return RedisFailure::kConnect;
  auto [cec, ep] = co_await net::async_connect(socket, endpoints, use_tuple);
  if (cec) co_return RedisFailure::kConnect;
  boost::system::error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  co_return std::nullopt;
}

}  // namespace

std::string_view to_string(RedisFailure f) {
  switch (f) {
    case RedisFailure::kTimeout:
      return "timeout";
    case RedisFailure::kConnect:
      return "connect";
    case RedisFailure::kTls:
      return "tls";
    case RedisFailure::kAuth:
      return "auth";
    case RedisFailure::kClosed:
      return "closed";
    case RedisFailure::kProtocol:
      return "protocol";
    case RedisFailure::kOverloaded:
      return "overloaded";
  }
  return "unknown";
}

boost::system::result<std::shared_ptr<net::ssl::context>> make_redis_tls(
    const std::string& ca_file) {
  auto ctx = std::make_shared<net::ssl::context>(net::ssl::context::tls_client);
  ctx->set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                   net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 |
                   net::ssl::context::no_tlsv1_1);
  ctx->set_verify_mode(net::ssl::verify_peer);
  boost::system::error_code ec;
  if (ca_file.empty()) {
    ctx->set_default_verify_paths(ec);
  } else {
    ctx->load_verify_file(ca_file, ec);
  }
  if (ec) return ec;
  return ctx;
}

net::awaitable<std::tuple<boost::system::error_code, std::size_t>> RedisStream::read_some(
    net::mutable_buffer b) {
  if (tls_) co_return co_await tls_->async_read_some(b, use_tuple);
  co_return co_await plain_.async_read_some(b, use_tuple);
}

net::awaitable<std::tuple<boost::system::error_code, std::size_t>> RedisStream::write(
    net::const_buffer b) {
  if (tls_) co_return co_await net::async_write(*tls_, b, use_tuple);
  co_return co_await net::async_write(plain_, b, use_tuple);
}

net::awaitable<boost::system::error_code> RedisStream::handshake(const std::string& host) {
  if (!tls_) co_return boost::system::error_code{};
  boost::system::error_code addr_ec;
  net::ip::make_address(host, addr_ec);
  if (addr_ec) SSL_set_tlsext_host_name(tls_->native_handle(), host.c_str());  // SNI: names only
  tls_->set_verify_callback(net::ssl::host_name_verification(host));
  auto [ec] = co_await tls_->async_handshake(net::ssl::stream_base::client, use_tuple);
  co_return ec;
}

void RedisStream::cancel() {
  boost::system::error_code ignored;
  socket().cancel(ignored);
}

void RedisStream::close() {
  boost::system::error_code ignored;
  socket().close(ignored);
}

net::awaitable<std::variant<RedisConnection, RedisFailure>> open_redis(
    const RedisConnectOptions& options, net::ssl::context* tls) {
  auto ex = co_await net::this_coro::executor;
  const RedisAddress& a = options.address;
  if (a.tls && tls == nullptr) co_return RedisFailure::kTls;
  tcp::resolver resolver(ex);
  tcp::socket socket(ex);
  RedisStream* stream = nullptr;  // once the socket has moved into it
  ExpiryGuard guard(ex, options.connect_timeout, [&] {
    resolver.cancel();
    boost::system::error_code ignored;
    if (stream != nullptr) {
      stream->cancel();
    } else {
      socket.cancel(ignored);
    }
  });
  if (auto f = co_await connect_tcp(resolver, socket, a)) co_return *f;
  RedisConnection c{a.tls ? RedisStream(std::move(socket), *tls) : RedisStream(std::move(socket)),
                    RedisDecoder()};
  stream = &c.stream;
  if (auto ec = co_await c.stream.handshake(a.host)) {
    co_return guard.fired() ? RedisFailure::kConnect : RedisFailure::kTls;
  }
  if (auto f = co_await run_setup(c, setup_commands(a))) {
    co_return guard.fired() ? RedisFailure::kConnect : *f;
  }
  if (guard.fired()) co_return RedisFailure::kConnect;  // cancelled just as it finished
  stream = nullptr;
  co_return std::move(c);
}

RedisLink::RedisLink(RedisConnection connection)
    : connection_(std::move(connection)),
      wake_(connection_.stream.executor()),
      closed_(connection_.stream.executor()) {}

void RedisLink::start(ReplyHandler on_reply, DownHandler on_down) {
  on_reply_ = std::move(on_reply);
  on_down_ = std::move(on_down);
  auto ex = connection_.stream.executor();
  net::co_spawn(ex, read_loop(shared_from_this()), rethrow_unexpected);
  net::co_spawn(ex, write_loop(shared_from_this()), rethrow_unexpected);
}

void RedisLink::send(std::span<const std::string_view> argv) {
  if (dead_) return;
  append_command(queued_, argv);
  wake_.cancel();
}

void RedisLink::reset(RedisFailure why) {
  if (dead_) return;
  dead_ = true;
  connection_.stream.close();
  wake_.cancel();
  closed_.cancel();
  auto down = std::move(on_down_);
  on_down_ = nullptr;
  if (down) down(why);
  // on_reply_ may be running (a handler that resets): the reader drops it when it ends.
}

net::awaitable<void> RedisLink::wait_closed() {
  while (!dead_) {
    closed_.expires_at(net::steady_timer::time_point::max());
    co_await closed_.async_wait(use_tuple);
  }
}

// Hands every whole reply to the handler. False when the stream is out of sync (reset).
bool RedisLink::drain_replies() {
  RedisReply reply;
  for (;;) {
    auto status = connection_.decoder.next(reply);
    if (status == RedisDecoder::Status::kNeedMore) return true;
    if (status == RedisDecoder::Status::kError) {
      reset(RedisFailure::kProtocol);
      return false;
    }
    on_reply_(std::move(reply));
    if (dead_) return false;  // the handler reset the link
  }
}

net::awaitable<void> RedisLink::read_loop(std::shared_ptr<RedisLink> self) {
  co_await read_replies(self);
  self->on_reply_ = nullptr;
}

net::awaitable<void> RedisLink::read_replies(const std::shared_ptr<RedisLink>& self) {
  std::array<char, 16 * 1024> buf;
  while (!self->dead_) {
    auto [ec, n] = co_await self->connection_.stream.read_some(net::buffer(buf));
    if (self->dead_) co_return;
    if (ec) {
      self->reset(RedisFailure::kClosed);
      co_return;
    }
    if (!self->connection_.decoder.feed({buf.data(), n})) {
      self->reset(RedisFailure::kProtocol);
      co_return;
    }
    if (!self->drain_replies()) co_return;
  }
}

net::awaitable<void> RedisLink::write_loop(std::shared_ptr<RedisLink> self) {
  while (!self->dead_) {
    if (self->queued_.empty()) {
      self->wake_.expires_at(net::steady_timer::time_point::max());
      co_await self->wake_.async_wait(use_tuple);
      continue;
    }
    self->writing_.swap(self->queued_);  // what queued so far goes out as one write
    auto [ec, n] = co_await self->connection_.stream.write(net::buffer(self->writing_));
    self->writing_.clear();
    if (self->dead_) co_return;
    if (ec) {
      self->reset(RedisFailure::kClosed);
      co_return;
    }
  }
}

void rethrow_unexpected(std::exception_ptr e) {
  if (e) std::rethrow_exception(e);
}

}  // namespace tollgate::cluster

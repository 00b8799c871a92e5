#pragma once
// One Redis connection: opening it (resolve, TCP, TLS for rediss://, AUTH, SELECT, PING, all
// bounded by one timeout) and running it (a reader and a writer coroutine on one executor).
// Shared by RedisClient (request/reply) and RedisSubscriber (pub/sub).
//
// Lifetime: a RedisLink is owned through shared_ptr; its reader and writer coroutines hold it
// until they end, which they do promptly after reset(). Thread: everything here runs on the
// executor the connection was opened on, and must be called from it.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/result.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <variant>

#include "cluster/backoff.hpp"
#include "cluster/redis_protocol.hpp"
#include "tollgate/config/redis_url.hpp"

namespace tollgate::cluster {

using config::RedisAddress;

namespace net = boost::asio;
using tcp = net::ip::tcp;

/// Every co_await returns [ec, ...]: errors are values.
inline constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

/// Why a Redis call or connection failed. A Redis error reply is not a failure (it is a reply).
enum class RedisFailure : std::uint8_t {
  kTimeout,     // no reply within the call's timeout
  kConnect,     // cannot connect (refused, unreachable, DNS, setup timed out, SELECT refused)
  kTls,         // the TLS handshake failed (bad certificate, wrong name, not a TLS port)
  kAuth,        // AUTH was refused (wrong user or password, or a password is needed)
  kClosed,      // the connection is down (lost, reset, or the client was closed)
  kProtocol,    // the server sent something that is not RESP, or a reply nobody asked for
  kOverloaded,  // too many calls awaiting replies: the connection was reset
};
std::string_view to_string(RedisFailure f);

/// Where and how to connect, and how to retry. One value for the client and the subscriber.
struct RedisConnectOptions {
  RedisAddress address;
  std::chrono::milliseconds connect_timeout{1000};  // bounds the whole opening of a connection
  std::string ca_file;                              // rediss://: PEM bundle; empty: system store
  BackoffOptions backoff;                           // between failed connection attempts
  std::uint64_t seed = std::random_device{}();      // the backoff's jitter
};

/// The TLS client context for rediss://: TLS 1.2 or later, the peer verified against `ca_file`
/// (or the system's trust store). Errors: the CA file cannot be loaded. Thread: any.
boost::system::result<std::shared_ptr<net::ssl::context>> make_redis_tls(
    const std::string& ca_file);

/// A plain or TLS byte stream to a Redis server.
class RedisStream {
 public:
  explicit RedisStream(tcp::socket socket) : plain_(std::move(socket)) {}
  /// Wraps the connected `socket` in TLS with `tls` (the handshake is not done yet).
  RedisStream(tcp::socket socket, net::ssl::context& tls)
      : plain_(socket.get_executor()),
        tls_(std::make_unique<net::ssl::stream<tcp::socket>>(std::move(socket), tls)) {}

  net::awaitable<std::tuple<boost::system::error_code, std::size_t>> read_some(
      net::mutable_buffer b);
  /// Writes all of `b`.
  net::awaitable<std::tuple<boost::system::error_code, std::size_t>> write(net::const_buffer b);
  /// The TLS client handshake with SNI and host name verification for `host`.
  net::awaitable<boost::system::error_code> handshake(const std::string& host);
  net::any_io_executor executor() { return plain_.get_executor(); }
  /// Cancels pending operations (they complete with operation_aborted).
  void cancel();
  /// Closes the socket (no TLS close_notify: the peer sees the TCP close).
  void close();

 private:
  tcp::socket& socket() { return tls_ ? tls_->next_layer() : plain_; }
  tcp::socket plain_;
  std::unique_ptr<net::ssl::stream<tcp::socket>> tls_;
};

/// An open connection: its stream and the decoder that has its bytes so far.
struct RedisConnection {
  RedisStream stream;
  RedisDecoder decoder;
};

/// Opens a connection to `options.address` on the calling coroutine's executor: resolves the
/// host, connects, does the TLS handshake when the address says so (`tls` must then be set),
/// sends AUTH (when a password is given), SELECT (when db is not 0) and PING, and reads their
/// replies — all within `options.connect_timeout`. Failures: kConnect (including a timeout and a
/// refused SELECT), kTls, kAuth, kProtocol. `options` and `tls` must outlive the call.
net::awaitable<std::variant<RedisConnection, RedisFailure>> open_redis(
    const RedisConnectOptions& options, net::ssl::context* tls);

/// A running connection: writes what it is sent in order, coalescing what queues while a write
/// is in flight into one write, and hands every reply to the reply handler in order.
class RedisLink : public std::enable_shared_from_this<RedisLink> {
 public:
  using ReplyHandler = std::function<void(RedisReply&&)>;
  using DownHandler = std::function<void(RedisFailure)>;

  explicit RedisLink(RedisConnection connection);

  /// Spawns the reader and the writer. `on_down` is called once, from reset().
  void start(ReplyHandler on_reply, DownHandler on_down);
  /// Queues the command `argv` (written at the writer's next turn). Ignored once reset.
  void send(std::span<const std::string_view> argv);
  /// Closes the connection and calls the down handler with `why` (the first call only). No
  /// handler is called after it; they are dropped (breaking any cycle through them) once the
  /// reader ends, promptly.
  void reset(RedisFailure why);
  bool dead() const { return dead_; }
  /// Completes once the link is reset.
  net::awaitable<void> wait_closed();

 private:
  static net::awaitable<void> read_loop(std::shared_ptr<RedisLink> self);
  static net::awaitable<void> read_replies(const std::shared_ptr<RedisLink>& self);
  static net::awaitable<void> write_loop(std::shared_ptr<RedisLink> self);
  bool drain_replies();

  RedisConnection connection_;
  std::string queued_;        // commands not yet handed to a write
  std::string writing_;       // the bytes of the write in flight
  net::steady_timer wake_;    // the idle writer waits on it; send() cancels it
  net::steady_timer closed_;  // wait_closed() waits on it; reset() cancels it
  ReplyHandler on_reply_;
  DownHandler on_down_;
  bool dead_ = false;
};

/// The completion of the module's spawned coroutines: they return errors as values, so an
/// exception here is a bug (or std::bad_alloc); it is rethrown out of the executor's run().
void rethrow_unexpected(std::exception_ptr e);

/// The life of a Redis connection's owner (RedisClient, RedisSubscriber): connect, serve until
/// the link closes, back off, connect again, until the owner is closed. The owner befriends this
/// function; it has closed_, connect_once(), link_ (with wait_closed()), sleep_ and
/// options_.connect. Thread: the owner's executor.
template <class Owner>
net::awaitable<void> keep_connected(std::shared_ptr<Owner> self) {
  Backoff backoff(self->options_.connect.backoff, self->options_.connect.seed);
  while (!self->closed_) {
    if (co_await self->connect_once()) {
      backoff.reset();
      auto link = self->link_;
      co_await link->wait_closed();
      if (self->closed_) break;
    }
    if (self->closed_) break;
    self->sleep_.expires_after(backoff.next());
    co_await self->sleep_.async_wait(use_tuple);
  }
}

}  // namespace tollgate::cluster

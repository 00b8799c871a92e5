#pragma once
// A non-blocking Redis client on Asio: one pipelined connection, every call bounded by a
// timeout, reconnecting in the background. hiredis is the RESP codec only; all I/O is Asio.
//
// Thread: a RedisClient lives on one executor (one worker's io_context). create(), start(),
// call(), eval(), up() and close() must run on that executor; the observer is called on it.
// Lifetime: owned through shared_ptr. start() spawns a background coroutine that holds the client
// until close(); call close() to let it go (pending calls then fail with kClosed at once).
// Never a hang: every call completes within `timeout` with a reply or a failure; while the
// connection is down, calls fail at once (kConnect / kAuth / kTls: the last attempt's failure,
// kClosed before the first attempt ends or after close()).

#include <chrono>
#include <cstddef>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "cluster/redis_connection.hpp"
#include "cluster/redis_protocol.hpp"

namespace tollgate::cluster {

/// A call's outcome: a reply (possibly a Redis error reply), or a failure.
struct RedisResult {
  std::optional<RedisFailure> failure;
  RedisReply reply;  // meaningful when !failure

  bool ok() const { return !failure.has_value(); }
  static RedisResult of(RedisReply r) { return {std::nullopt, std::move(r)}; }
  static RedisResult failed(RedisFailure f) { return {f, {}}; }
};

/// What the owner may watch (metrics, logs). Called on the client's executor; must not call
/// back into the client synchronously. Default: nothing.
class RedisObserver {
 public:
  virtual ~RedisObserver() = default;
  /// A call got its reply `rtt` after it was queued.
  virtual void on_round_trip(std::chrono::nanoseconds rtt) { (void)rtt; }
  /// A call or a connection attempt failed.
  virtual void on_failure(RedisFailure why) { (void)why; }
  /// The connection came up (true) or went down (false).
  virtual void on_up(bool up) { (void)up; }
};

struct RedisClientOptions {
  RedisConnectOptions connect;
  std::chrono::milliseconds timeout{50};  // per call: a later reply is a kTimeout failure
  // The connection is reset (and reopened) when its oldest unanswered call is older than
  // `timeout` × this (the server stopped answering), ...
  std::uint32_t stale_after_timeouts = 4;
  // ... or when this many calls await replies (the server is not keeping up): kOverloaded.
  std::size_t max_pending = 10000;
  std::shared_ptr<RedisObserver> observer;  // optional
};

/// A Lua script and its SHA-1 (hex), for EVALSHA.
struct RedisScript {
  explicit RedisScript(std::string source);
  std::string source;
  std::string sha1;
};

class RedisClient : public std::enable_shared_from_this<RedisClient> {
 public:
  /// A client of `options.connect.address` on `ex` (not connected yet: see start()).
  /// Errors: the TLS context for rediss:// cannot be made (the CA file cannot be loaded).
  static boost::system::result<std::shared_ptr<RedisClient>> create(net::any_io_executor ex,
                                                                    RedisClientOptions options);
  ~RedisClient();

  /// Starts connecting, and reconnecting whenever the connection is lost, with backoff.
  void start();
  /// Sends the command `argv` and awaits its reply, at most `timeout`. Calls may overlap: their
  /// commands are written in call order and their replies matched in that order (pipelining).
  /// `argv` is copied before the first suspension.
  net::awaitable<RedisResult> call(std::span<const std::string_view> argv);
  /// EVALSHA of `script` with `keys` and `args`; on NOSCRIPT, EVAL once (which loads it).
  net::awaitable<RedisResult> eval(const RedisScript& script,
                                   std::span<const std::string_view> keys,
                                   std::span<const std::string_view> args);
  /// The connection is open and set up.
  bool up() const { return link_ != nullptr && !link_->dead(); }
  /// Closes the connection and stops reconnecting; pending and later calls fail with kClosed.
  void close();
  bool closed() const { return closed_; }
  const net::any_io_executor& executor() const { return executor_; }

 private:
  struct Pending;
  RedisClient(net::any_io_executor ex, RedisClientOptions options,
              std::shared_ptr<net::ssl::context> tls);

  template <class Owner>
  friend net::awaitable<void> keep_connected(std::shared_ptr<Owner> self);
  net::awaitable<bool> connect_once();
  void on_reply(RedisReply&& reply);
  void on_down(RedisFailure why);
  std::optional<RedisFailure> admit();
  void watch_stale();
  bool stale() const;
  void fail(RedisFailure why);
  net::awaitable<RedisResult> eval_with(std::string_view verb, std::string_view script,
                                        std::span<const std::string_view> keys,
                                        std::span<const std::string_view> args);

  // Owner of everything below: the client's executor.
  net::any_io_executor executor_;
  RedisClientOptions options_;
  std::shared_ptr<net::ssl::context> tls_;        // rediss:// only
  std::shared_ptr<RedisLink> link_;               // the current connection, up or just lost
  std::deque<std::shared_ptr<Pending>> pending_;  // calls on link_ awaiting replies, oldest first
  net::steady_timer sleep_;     // the reconnect loop's backoff wait; close() cancels it
  net::steady_timer watchdog_;  // armed while an abandoned call awaits its reply
  bool watchdog_armed_ = false;
  RedisFailure down_reason_ = RedisFailure::kClosed;
  bool started_ = false;
  bool closed_ = false;
};

}  // namespace tollgate::cluster

#pragma once
// A Redis pub/sub subscriber on Asio: its own connection (a subscribed connection takes no other
// commands), resubscribed to every channel after each reconnect.
//
// Thread: lives on one executor; create(), start(), subscribe(), up() and close() must run on it,
// and the handlers are called on it. Lifetime: owned through shared_ptr; start() spawns a
// background coroutine that holds the subscriber until close().
// Messages published while the connection is down are lost (pub/sub keeps nothing): the
// subscribed handler runs after every (re)subscription, so the owner can re-read the state the
// messages would have told it about.

#include <chrono>
#include <functional>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <string_view>

#include "cluster/redis_client.hpp"
#include "cluster/redis_connection.hpp"

namespace tollgate::cluster {

struct RedisSubscriberOptions {
  RedisConnectOptions connect;
  // A quiet connection is probed with PING this often; one that stays silent for two intervals
  // (its last probe unanswered: a hung or unreachable server) is dropped and reopened.
  std::chrono::milliseconds ping_interval{1000};
  std::shared_ptr<RedisObserver> observer;  // optional: failures and up/down (no round trips)
};

class RedisSubscriber : public std::enable_shared_from_this<RedisSubscriber> {
 public:
  using MessageHandler = std::function<void(std::string_view channel, std::string_view payload)>;
  using SubscribedHandler = std::function<void()>;

  /// A subscriber calling `on_message` for each message on its channels, and `on_subscribed`
  /// each time a SUBSCRIBE it sent (on a (re)connect, or from subscribe()) is fully confirmed.
  /// Errors: the TLS context for rediss:// cannot be made.
  static boost::system::result<std::shared_ptr<RedisSubscriber>> create(
      net::any_io_executor ex, RedisSubscriberOptions options, MessageHandler on_message,
      SubscribedHandler on_subscribed);

  /// Starts connecting (and reconnecting with backoff whenever the connection is lost).
  void start();
  /// Adds `channels` (kept across reconnects); subscribes to the new ones now when up.
  void subscribe(std::span<const std::string> channels);
  /// The connection is open (its subscriptions may still be in flight).
  bool up() const { return link_ != nullptr && !link_->dead(); }
  /// Closes the connection and stops reconnecting; no handler is called after it.
  void close();

 private:
  RedisSubscriber(net::any_io_executor ex, RedisSubscriberOptions options,
                  std::shared_ptr<net::ssl::context> tls, MessageHandler on_message,
                  SubscribedHandler on_subscribed);
  template <class Owner>
  friend net::awaitable<void> keep_connected(std::shared_ptr<Owner> self);
  static net::awaitable<void> keepalive(std::shared_ptr<RedisSubscriber> self,
                                        std::shared_ptr<RedisLink> link);
  net::awaitable<bool> connect_once();
  void send_subscribe(std::span<const std::string> channels);
  void on_reply(RedisReply&& reply);
  void on_down(RedisFailure why);

  // Owner of everything below: the subscriber's executor.
  net::any_io_executor executor_;
  RedisSubscriberOptions options_;
  std::shared_ptr<net::ssl::context> tls_;
  MessageHandler on_message_;
  SubscribedHandler on_subscribed_;
  std::set<std::string> channels_;  // every channel asked for
  std::shared_ptr<RedisLink> link_;
  std::size_t unconfirmed_ = 0;  // channels sent in SUBSCRIBE whose confirmation has not come
  std::chrono::steady_clock::time_point last_heard_{};  // the last reply on link_
  net::steady_timer sleep_;                             // the reconnect loop's backoff wait
  net::steady_timer ping_;                              // the keepalive's wait
  bool started_ = false;
  bool closed_ = false;
};

}  // namespace tollgate::cluster

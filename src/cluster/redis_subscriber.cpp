#include "cluster/redis_subscriber.hpp"

#include <boost/asio/co_spawn.hpp>
#include <vector>

namespace tollgate::cluster {

boost::system::result<std::shared_ptr<RedisSubscriber>> RedisSubscriber::create(
    net::any_io_executor ex, RedisSubscriberOptions options, MessageHandler on_message,
    SubscribedHandler on_subscribed) {
  std::shared_ptr<net::ssl::context> tls;
  if (options.connect.address.tls) {
    auto made = make_redis_tls(options.connect.ca_file);
    if (!made) return made.error();
    tls = *made;
  }
  return std::shared_ptr<RedisSubscriber>(new RedisSubscriber(
      std::move(ex), std::move(options), tls, std::move(on_message), std::move(on_subscribed)));
}

RedisSubscriber::RedisSubscriber(net::any_io_executor ex, RedisSubscriberOptions options,
                                 std::shared_ptr<net::ssl::context> tls, MessageHandler on_message,
                                 SubscribedHandler on_subscribed)
    : executor_(ex),
      options_(std::move(options)),
      tls_(std::move(tls)),
      on_message_(std::move(on_message)),
      on_subscribed_(std::move(on_subscribed)),
      sleep_(ex),
      ping_(ex) {}

void RedisSubscriber::start() {
  if (started_ || closed_) return;
  started_ = true;
  net::co_spawn(executor_, keep_connected(shared_from_this()), rethrow_unexpected);
}

net::awaitable<bool> RedisSubscriber::connect_once() {
  auto opened = co_await open_redis(options_.connect, tls_.get());
  if (closed_) co_return false;
  if (auto* f = std::get_if<RedisFailure>(&opened)) {
    if (options_.observer) options_.observer->on_failure(*f);
    co_return false;
  }
  link_ = std::make_shared<RedisLink>(std::move(std::get<RedisConnection>(opened)));
  // The handlers hold `this` without owning it: run() owns the subscriber until the link is
  // reset, and the link calls no handler after reset().
  link_->start([this](RedisReply&& r) { on_reply(std::move(r)); },
               [this](RedisFailure why) { on_down(why); });
  last_heard_ = std::chrono::steady_clock::now();
  unconfirmed_ = 0;
  std::vector<std::string> all(channels_.begin(), channels_.end());
  send_subscribe(all);
  net::co_spawn(executor_, keepalive(shared_from_this(), link_), rethrow_unexpected);
  if (options_.observer) options_.observer->on_up(true);
  co_return true;
}

void RedisSubscriber::subscribe(std::span<const std::string> channels) {
  std::vector<std::string> fresh;
  for (const auto& c : channels) {
    if (channels_.insert(c).second) fresh.push_back(c);
  }
  if (up()) send_subscribe(fresh);
}

void RedisSubscriber::send_subscribe(std::span<const std::string> channels) {
  if (channels.empty()) return;
  std::vector<std::string_view> argv{"SUBSCRIBE"};
  argv.insert(argv.end(), channels.begin(), channels.end());
  link_->send(argv);
  unconfirmed_ += channels.size();
}

// Pushes are arrays: [message, channel, payload], [subscribe, channel, count], [pong, ""].
// The handlers may close() the subscriber: nothing here touches the link after calling them.
void RedisSubscriber::on_reply(RedisReply&& reply) {
  last_heard_ = std::chrono::steady_clock::now();
  if (reply.kind == RedisReply::Kind::kStatus) return;  // +PONG while subscribed to nothing
  if (reply.kind != RedisReply::Kind::kArray || reply.elements.empty()) {
    link_->reset(RedisFailure::kProtocol);  // an error reply (SUBSCRIBE refused) or garbage
    return;
  }
  const auto& e = reply.elements;
  const std::string& kind = e[0].text;
  if (kind == "message" && e.size() == 3) {
    on_message_(e[1].text, e[2].text);
  } else if (kind == "subscribe" && unconfirmed_ > 0) {
    if (--unconfirmed_ == 0 && on_subscribed_) on_subscribed_();
  }
}

void RedisSubscriber::on_down(RedisFailure why) {
  ping_.cancel();
  if (!options_.observer) return;
  if (!closed_) options_.observer->on_failure(why);
  options_.observer->on_up(false);
}

net::awaitable<void> RedisSubscriber::keepalive(std::shared_ptr<RedisSubscriber> self,
                                                std::shared_ptr<RedisLink> link) {
  const auto interval = self->options_.ping_interval;
  while (!link->dead()) {
    self->ping_.expires_after(interval);
    co_await self->ping_.async_wait(use_tuple);
    if (link->dead()) co_return;
    if (std::chrono::steady_clock::now() - self->last_heard_ > 2 * interval) {
      link->reset(RedisFailure::kTimeout);
      co_return;
    }
    const std::string_view ping[] = {"PING"};
    link->send(ping);
  }
}

void RedisSubscriber::close() {
  if (closed_) return;
  closed_ = true;
  sleep_.cancel();
  ping_.cancel();
  if (link_) link_->reset(RedisFailure::kClosed);  // no reply, so no handler, after this
}

}  // namespace tollgate::cluster

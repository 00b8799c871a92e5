#include "cluster/redis_subscriber.hpp"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "async_test.hpp"
#include "redis_server.hpp"

namespace tollgate::cluster {
namespace {

using namespace test;

struct Received {
  std::vector<std::pair<std::string, std::string>> messages;
  int subscribed = 0;
};

std::shared_ptr<RedisSubscriber> started_subscriber(const net::any_io_executor& ex,
                                                    const RedisServer& server, Received& got) {
  RedisSubscriberOptions o;
  o.connect = client_options(server).connect;
  o.ping_interval = Ms(200);
  auto s = RedisSubscriber::create(
      ex, o,
      [&got](std::string_view ch, std::string_view payload) {
        got.messages.emplace_back(std::string(ch), std::string(payload));
      },
      [&got] { ++got.subscribed; });
  EXPECT_TRUE(s.has_value());
  if (!s) return nullptr;
  (*s)->start();
  return *s;
}

TEST(RedisSubscriberTest, DeliversMessagesAndResubscribesAfterARestart) {
  RedisServer server;
  Received got;
  run_async([&](net::any_io_executor ex) -> net::awaitable<void> {
    auto publisher = started(ex, client_options(server));
    auto sub = started_subscriber(ex, server, got);
    const std::vector<std::string> channels{"tollgate:keys", "tollgate:backends"};
    sub->subscribe(channels);
    EXPECT_TRUE(co_await eventually([&] { return got.subscribed == 1; }, Ms(5000)));
    EXPECT_TRUE(co_await eventually_answers(*publisher, Ms(5000)));
    auto n = co_await cmd(*publisher, "PUBLISH", "tollgate:keys", std::string_view("k\0 1", 4));
    EXPECT_EQ(n.reply, RedisReply::of_integer(1));
    co_await cmd(*publisher, "PUBLISH", "elsewhere", "ignored");
    co_await cmd(*publisher, "PUBLISH", "tollgate:backends", "b");
    EXPECT_TRUE(co_await eventually([&] { return got.messages.size() == 2; }, Ms(5000)));
    co_await sleep_for(Ms(50));
    EXPECT_EQ(got.messages,
              (std::vector<std::pair<std::string, std::string>>{
                  {"tollgate:keys", std::string("k\0 1", 4)}, {"tollgate:backends", "b"}}));

    server.restart();
    EXPECT_TRUE(co_await eventually([&] { return got.subscribed == 2; }, Ms(5000)));
    EXPECT_TRUE(co_await eventually_answers(*publisher, Ms(5000)));
    co_await cmd(*publisher, "PUBLISH", "tollgate:backends", "again");
    EXPECT_TRUE(co_await eventually([&] { return got.messages.size() == 3; }, Ms(5000)));
    publisher->close();
    sub->close();
  });
  ASSERT_EQ(got.messages.size(), 3u);
  EXPECT_EQ(got.messages[2].second, "again");
}

TEST(RedisSubscriberTest, AHungServerIsDetectedByTheKeepalive) {
  RedisServer server;
  Received got;
  run_async([&](net::any_io_executor ex) -> net::awaitable<void> {
    auto sub = started_subscriber(ex, server, got);
    const std::vector<std::string> channels{"c"};
    sub->subscribe(channels);
    EXPECT_TRUE(co_await eventually([&] { return got.subscribed == 1; }, Ms(5000)));
    server.pause();
    // Silent for two ping intervals (400 ms): dropped.
    EXPECT_TRUE(co_await eventually([&] { return !sub->up(); }, Ms(2000)));
    server.resume();
    EXPECT_TRUE(co_await eventually([&] { return got.subscribed == 2; }, Ms(5000)));
    sub->close();
  });
}

TEST(RedisSubscriberTest, SubscribesLaterChannelsWhileUp) {
  RedisServer server;
  Received got;
  run_async([&](net::any_io_executor ex) -> net::awaitable<void> {
    auto publisher = started(ex, client_options(server));
    auto sub = started_subscriber(ex, server, got);
    EXPECT_TRUE(co_await eventually([&] { return sub->up(); }, Ms(5000)));
    co_await sleep_for(Ms(450));  // idle, unsubscribed: the keepalive's +PONG keeps it up
    EXPECT_TRUE(sub->up());
    const std::vector<std::string> channels{"late"};
    sub->subscribe(channels);
    EXPECT_TRUE(co_await eventually([&] { return got.subscribed == 1; }, Ms(5000)));
    EXPECT_TRUE(co_await eventually_answers(*publisher, Ms(5000)));
    co_await cmd(*publisher, "PUBLISH", "late", "x");
    EXPECT_TRUE(co_await eventually([&] { return got.messages.size() == 1; }, Ms(5000)));
    publisher->close();
    sub->close();
  });
}

}  // namespace
}  // namespace tollgate::cluster

#pragma once
// Running a test body as a coroutine on its own io_context, bounded in time, and the helpers the
// cluster tests share.

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <memory>
#include <vector>

#include "cluster/redis_client.hpp"
#include "redis_server.hpp"

namespace tollgate::cluster::test {

using Ms = std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

/// Runs `body(executor)` (returning net::awaitable<void>) on a fresh io_context for at most
/// `limit`. The test fails if the body did not finish, or if work was left running after it
/// (a client or subscriber that did not wind down after close()).
template <class Body>
void run_async(Body body, std::chrono::seconds limit = std::chrono::seconds(30)) {
  net::io_context io;
  bool finished = false;
  net::co_spawn(
      io,
      [&]() -> net::awaitable<void> {
        co_await body(io.get_executor());
        finished = true;
      },
      rethrow_unexpected);
  io.run_for(limit);
  EXPECT_TRUE(finished) << "the test body did not finish within " << limit.count() << " s";
  EXPECT_TRUE(io.stopped()) << "work was left running after the test body";
}

inline net::awaitable<void> sleep_for(Ms d) {
  net::steady_timer t(co_await net::this_coro::executor, d);
  co_await t.async_wait(use_tuple);
}

inline net::awaitable<RedisResult> call_argv(RedisClient& c, std::vector<std::string_view> argv) {
  co_return co_await c.call(argv);
}

/// c.call() of the arguments. (Variadic, not an initializer_list: GCC 12 miscompiles a braced
/// list whose lifetime spans a co_await.)
template <class... Args>
net::awaitable<RedisResult> cmd(RedisClient& c, const Args&... args) {
  return call_argv(c, std::vector<std::string_view>{std::string_view(args)...});
}

/// Options for a client of `server` with test-friendly timeouts and fast reconnects.
inline RedisClientOptions client_options(const RedisServer& server, Ms timeout = Ms(500)) {
  RedisClientOptions o;
  o.connect.address.host = "127.0.0.1";
  o.connect.address.port = server.port();
  o.connect.connect_timeout = Ms(500);
  o.connect.backoff = {Ms(20), Ms(200)};
  o.connect.seed = 1;
  o.timeout = timeout;
  return o;
}

inline std::shared_ptr<RedisClient> started(const net::any_io_executor& ex, RedisClientOptions o) {
  auto c = RedisClient::create(ex, std::move(o));
  EXPECT_TRUE(c.has_value());
  if (!c) return nullptr;
  (*c)->start();
  return *c;
}

/// Polls `pred()` every 10 ms until it holds or `limit` passes; whether it held.
template <class Pred>
net::awaitable<bool> eventually(Pred pred, Ms limit) {
  auto until = SteadyClock::now() + limit;
  while (!pred()) {
    if (SteadyClock::now() >= until) co_return false;
    co_await sleep_for(Ms(10));
  }
  co_return true;
}

/// Calls PING every 10 ms until one succeeds or `limit` passes; whether one did.
inline net::awaitable<bool> eventually_answers(RedisClient& c, Ms limit) {
  auto until = SteadyClock::now() + limit;
  while (!(co_await cmd(c, "PING")).ok()) {
    if (SteadyClock::now() >= until) co_return false;
    co_await sleep_for(Ms(10));
  }
  co_return true;
}

/// The first call's failure once the first connection attempt has ended (bounded by `limit`):
/// nullopt when the call succeeded.
inline net::awaitable<std::optional<RedisFailure>> settled_failure(RedisClient& c, Ms limit) {
  auto until = SteadyClock::now() + limit;
  for (;;) {
    auto r = co_await cmd(c, "PING");
    if (r.ok() || r.failure != RedisFailure::kClosed || SteadyClock::now() >= until)
      co_return r.failure;
    co_await sleep_for(Ms(10));
  }
}

}  // namespace tollgate::cluster::test

#include "cluster/redis_client.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "async_test.hpp"
#include "redis_server.hpp"

namespace tollgate::cluster {
namespace {

using namespace test;
using Kind = RedisReply::Kind;

// Counts what the client reports.
struct CountingObserver : RedisObserver {
  void on_round_trip(std::chrono::nanoseconds) override { ++round_trips; }
  void on_failure(RedisFailure why) override { ++failures[static_cast<std::size_t>(why)]; }
  void on_up(bool up) override { (up ? ups : downs) += 1; }
  int round_trips = 0;
  int failures[8] = {};
  int ups = 0;
  int downs = 0;
};

// The server's count of read events, from INFO stats.
long reads_processed(const RedisReply& info) {
  static constexpr std::string_view kField = "total_reads_processed:";
  auto at = info.text.find(kField);
  EXPECT_NE(at, std::string::npos) << info.text;
  return at == std::string::npos ? -1 : std::stol(info.text.substr(at + kField.size()));
}

TEST(RedisClientTest, EveryReplyKind) {
  RedisServer server;
  run_async([&](net::any_io_executor ex) -> net::awaitable<void> {
    auto c = started(ex, client_options(server));
    EXPECT_TRUE(co_await eventually_answers(*c, Ms(5000)));
    EXPECT_TRUE(c->up());
    const std::string binary("v\0\r\n1", 5);
    auto set = co_await cmd(*c, "SET", "k", binary);
    EXPECT_EQ(set.reply, RedisReply::of_status("OK"));
    EXPECT_EQ((co_await cmd(*c, "GET", "k")).reply, RedisReply::of_string(binary));
    EXPECT_EQ((co_await cmd(*c, "GET", "missing")).reply, RedisReply::nil());
    EXPECT_EQ((co_await cmd(*c, "INCRBY", "n", "-5")).reply, RedisReply::of_integer(-5));
    co_await cmd(*c, "RPUSH", "l", "a", "b");
    const auto ab = RedisReply::of_array({RedisReply::of_string("a"), RedisReply::of_string("b")});
    EXPECT_EQ((co_await cmd(*c, "LRANGE", "l", "0", "-1")).reply, ab);
    auto err = co_await cmd(*c, "INCR", "k");  // not an integer: an error reply, not a failure
    EXPECT_TRUE(err.ok());
    EXPECT_TRUE(err.reply.is_error("ERR")) << err.reply.text;
    auto unknown = co_await cmd(*c, "NO-SUCH-COMMAND");
    EXPECT_TRUE(unknown.ok() && unknown.reply.is_error());
    c->close();
    EXPECT_EQ((co_await cmd(*c, "PING")).failure, RedisFailure::kClosed);
  });
}

TEST(RedisClientTest, ThousandConcurrentCallsArePipelinedAndMatchedInOrder) {
  RedisServer server;
  run_async([&](net::any_io_executor ex) -> net::awaitable<void> {
    auto c = started(ex, client_options(server, Ms(5000)));
    EXPECT_TRUE(co_await eventually_answers(*c, Ms(5000)));
    const auto reads_before = reads_processed((co_await cmd(*c, "INFO", "stats")).reply);
    constexpr int kCalls = 1000;
    int done = 0;
    int correct = 0;
    for (int i = 0; i < kCalls; ++i) {
      net::co_spawn(
          ex,
          [&, i]() -> net::awaitable<void> {
            std::string v = "value-" + std::to_string(i);
            auto r = co_await cmd(*c, "ECHO", v);
            if (r.ok() && r.reply == RedisReply::of_string(v)) ++correct;
            ++done;
          },
          rethrow_unexpected);
    }
    EXPECT_TRUE(co_await eventually([&] { return done == kCalls; }, Ms(10000)));
    EXPECT_EQ(correct, kCalls);
    // All were queued before the first write went out: they reach the server in a few writes,
    // which it takes in a few reads (one write per call would be hundreds of reads).
    const auto reads = reads_processed((co_await cmd(*c, "INFO", "stats")).reply) - reads_before;
    EXPECT_LE(reads, 20) << "server reads for " << kCalls << " calls";
    c->close();
  });
}

TEST(RedisClientTest, EvalShaFallsBackToEvalOnNoScriptThenUsesTheLoadedScript) {
  RedisServer server;
  run_async([&](net::any_io_executor ex) -> net::awaitable<void> {
    auto c = started(ex, client_options(server));
    EXPECT_TRUE(co_await eventually_answers(*c, Ms(5000)));
    RedisScript script("return redis.call('INCRBY', KEYS[1], ARGV[1])");
    EXPECT_EQ(script.sha1.size(), 40u);
    std::string_view keys[] = {"counter"};
    std::string_view args[] = {"7"};
    EXPECT_EQ((co_await c->eval(script, keys, args)).reply, RedisReply::of_integer(7));
    EXPECT_EQ((co_await c->eval(script, keys, args)).reply, RedisReply::of_integer(14));
    // Redis computed the same SHA-1: the script is loaded under our name.
    auto exists = co_await cmd(*c, "SCRIPT", "EXISTS", script.sha1);
    const auto one = RedisReply::of_array({RedisReply::of_integer(1)});
    EXPECT_EQ(exists.reply, one);
    auto stats = co_await cmd(*c, "INFO", "commandstats");
    EXPECT_NE(stats.reply.text.find("cmdstat_eval:calls=1,"), std::string::npos)
        << stats.reply.text;
    EXPECT_NE(stats.reply.text.find("cmdstat_evalsha:calls=2,"), std::string::npos);
    c->close();
  });
}

TEST(RedisClientTest, PasswordAndUserAuthAndWrongPasswordIsAnAuthFailure) {
  RedisServer server({.requirepass = "s3cret"});
  run_async([&](net::any_io_executor ex) -> net::awaitable<void> {
    auto o = client_options(server);
    o.connect.address.password = "s3cret";
    auto admin = started(ex, o);
    EXPECT_TRUE(co_await eventually_answers(*admin, Ms(5000)));
    auto acl = co_await cmd(*admin, "ACL", "SETUSER", "alice", "on", ">pw2", "~*", "&*", "+@all");
    EXPECT_EQ(acl.reply, RedisReply::of_status("OK"));

    o.connect.address.user = "alice";
    o.connect.address.password = "pw2";
    auto alice = started(ex, o);
    EXPECT_TRUE(co_await eventually_answers(*alice, Ms(5000)));
    EXPECT_EQ((co_await cmd(*alice, "ACL", "WHOAMI")).reply, RedisReply::of_string("alice"));

    o.connect.address.user.clear();
    o.connect.address.password = "wrong";
    auto wrong = started(ex, o);
    EXPECT_EQ(co_await settled_failure(*wrong, Ms(5000)), RedisFailure::kAuth);
    o.connect.address.password.clear();
    auto none = started(ex, o);
    EXPECT_EQ(co_await settled_failure(*none, Ms(5000)), RedisFailure::kAuth);
    admin->close();
    alice->close();
    wrong->close();
    none->close();
  });
}

TEST(RedisClientTest, SelectsTheDatabaseOfTheAddress) {
  RedisServer server;
  run_async([&](net::any_io_executor ex) -> net::awaitable<void> {
    auto o = client_options(server);
    auto db0 = started(ex, o);
    o.connect.address.db = 3;
    auto db3 = started(ex, o);
    EXPECT_TRUE(co_await eventually_answers(*db0, Ms(5000)));
    EXPECT_TRUE(co_await eventually_answers(*db3, Ms(5000)));
    co_await cmd(*db3, "SET", "where", "three");
    EXPECT_EQ((co_await cmd(*db3, "GET", "where")).reply, RedisReply::of_string("three"));
    EXPECT_EQ((co_await cmd(*db0, "GET", "where")).reply, RedisReply::nil());
    o.connect.address.db = 100000;  // beyond the server's 16 databases: SELECT is refused
    auto bad = started(ex, o);
    EXPECT_EQ(co_await settled_failure(*bad, Ms(5000)), RedisFailure::kConnect);
    db0->close();
    db3->close();
    bad->close();
  });
}

TEST(RedisClientTest, LateReplyIsDroppedAndTheConnectionStaysInStep) {
  RedisServer server;
  run_async([&](net::any_io_executor ex) -> net::awaitable<void> {
    auto c = started(ex, client_options(server, Ms(100)));
    EXPECT_TRUE(co_await eventually_answers(*c, Ms(5000)));
    // BLPOP holds this connection's replies for 300 ms: both calls time out, the replies come
    // late (before the 400 ms staleness bound) and are matched to the abandoned calls.
    auto blocked = co_await cmd(*c, "BLPOP", "empty", "0.3");
    EXPECT_EQ(blocked.failure, RedisFailure::kTimeout);
    EXPECT_EQ((co_await cmd(*c, "ECHO", "a")).failure, RedisFailure::kTimeout);
    co_await sleep_for(Ms(150));
    EXPECT_TRUE(c->up());
    EXPECT_EQ((co_await cmd(*c, "ECHO", "b")).reply, RedisReply::of_string("b"));
    c->close();
  });
}

TEST(RedisClientTest, PausedServerCallsTimeOutInTimeThenRecoverAfterResume) {
  RedisServer server;
  auto observer = std::make_shared<CountingObserver>();
  run_async([&](net::any_io_executor ex) -> net::awaitable<void> {
    auto o = client_options(server, Ms(100));
    o.observer = observer;
    auto c = started(ex, o);
    EXPECT_TRUE(co_await eventually_answers(*c, Ms(5000)));
    server.pause();
    for (int i = 0; i < 3; ++i) {
      auto t0 = SteadyClock::now();
      auto r = co_await cmd(*c, "PING");
      auto took = SteadyClock::now() - t0;
      EXPECT_FALSE(r.ok());
      EXPECT_LE(took, Ms(100) + Ms(150)) << "call " << i;  // timeout + slack for a loaded machine
    }
    // Past 4 × timeout the hung connection is dropped; calls then fail at once.
    EXPECT_TRUE(co_await eventually([&] { return !c->up(); }, Ms(2000)));
    auto t0 = SteadyClock::now();
    auto fast = co_await cmd(*c, "PING");
    EXPECT_FALSE(fast.ok());
    EXPECT_LE(SteadyClock::now() - t0, Ms(20));
    server.resume();
    EXPECT_TRUE(co_await eventually_answers(*c, Ms(5000)));
    EXPECT_GE(observer->failures[static_cast<std::size_t>(RedisFailure::kTimeout)], 3);
    EXPECT_GE(observer->downs, 1);
    EXPECT_GE(observer->ups, 2);
    c->close();
  });
}

TEST(RedisClientTest, KilledServerCallsFailFastThenTheClientReconnectsAfterRestart) {
  RedisServer server;
  auto observer = std::make_shared<CountingObserver>();
  run_async([&](net::any_io_executor ex) -> net::awaitable<void> {
    auto o = client_options(server, Ms(100));
    o.observer = observer;
    auto c = started(ex, o);
    EXPECT_TRUE(co_await eventually_answers(*c, Ms(5000)));
    server.stop();
    EXPECT_TRUE(co_await eventually([&] { return !c->up(); }, Ms(2000)));
    for (int i = 0; i < 5; ++i) {
      auto t0 = SteadyClock::now();
      auto r = co_await cmd(*c, "PING");
      EXPECT_TRUE(r.failure == RedisFailure::kClosed || r.failure == RedisFailure::kConnect);
      EXPECT_LE(SteadyClock::now() - t0, Ms(20));
      co_await sleep_for(Ms(50));
    }
    server.restart();
    EXPECT_TRUE(co_await eventually_answers(*c, Ms(5000)));
    EXPECT_EQ((co_await cmd(*c, "SET", "after", "restart")).reply, RedisReply::of_status("OK"));
    EXPECT_GE(observer->failures[static_cast<std::size_t>(RedisFailure::kConnect)], 1);
    EXPECT_GE(observer->round_trips, 2);
    c->close();
  });
}

TEST(RedisClientTest, TooManyCallsAwaitingRepliesResetTheConnection) {
  RedisServer server;
  run_async([&](net::any_io_executor ex) -> net::awaitable<void> {
    auto o = client_options(server, Ms(1000));
    o.max_pending = 10;
    auto c = started(ex, o);
    EXPECT_TRUE(co_await eventually_answers(*c, Ms(5000)));
    server.pause();
    int done = 0;
    int overloaded = 0;
    for (int i = 0; i < 11; ++i) {
      net::co_spawn(
          ex,
          [&]() -> net::awaitable<void> {
            auto r = co_await cmd(*c, "PING");
            if (r.failure == RedisFailure::kOverloaded) ++overloaded;
            ++done;
          },
          rethrow_unexpected);
    }
    EXPECT_TRUE(co_await eventually([&] { return done == 11; }, Ms(3000)));
    EXPECT_EQ(overloaded, 11);  // the 11th call, and the 10 the reset failed
    server.resume();
    EXPECT_TRUE(co_await eventually_answers(*c, Ms(5000)));
    c->close();
  });
}

TEST(RedisClientTest, NoServerIsAConnectFailureAtOnce) {
  RedisServer server;
  server.stop();  // its port, with nothing listening
  run_async([&](net::any_io_executor ex) -> net::awaitable<void> {
    auto c = started(ex, client_options(server));
    EXPECT_EQ(co_await settled_failure(*c, Ms(5000)), RedisFailure::kConnect);
    auto t0 = SteadyClock::now();
    EXPECT_EQ((co_await cmd(*c, "PING")).failure, RedisFailure::kConnect);
    EXPECT_LE(SteadyClock::now() - t0, Ms(20));
    EXPECT_FALSE(c->up());
    c->close();
  });
}

TEST(RedisClientTest, CloseFailsPendingCallsAtOnce) {
  RedisServer server;
  run_async([&](net::any_io_executor ex) -> net::awaitable<void> {
    auto c = started(ex, client_options(server, Ms(5000)));
    EXPECT_TRUE(co_await eventually_answers(*c, Ms(5000)));
    server.pause();
    std::optional<RedisResult> pending;
    net::co_spawn(
        ex, [&]() -> net::awaitable<void> { pending = co_await cmd(*c, "PING"); },
        rethrow_unexpected);
    co_await sleep_for(Ms(20));
    EXPECT_FALSE(pending.has_value());
    auto t0 = SteadyClock::now();
    c->close();
    EXPECT_TRUE(co_await eventually([&] { return pending.has_value(); }, Ms(1000)));
    EXPECT_LE(SteadyClock::now() - t0, Ms(100));
    EXPECT_EQ(pending ? pending->failure : std::nullopt, RedisFailure::kClosed);
    server.resume();
  });
}

TEST(RedisClientTest, TlsWithTheServersCertificate) {
  RedisServer server({.tls = true});
  run_async([&](net::any_io_executor ex) -> net::awaitable<void> {
    auto o = client_options(server);
    o.connect.address.tls = true;
    o.connect.ca_file = server.certificate();
    auto c = started(ex, o);
    EXPECT_TRUE(co_await eventually_answers(*c, Ms(5000)));
    EXPECT_EQ((co_await cmd(*c, "ECHO", "over tls")).reply, RedisReply::of_string("over tls"));
    o.connect.ca_file.clear();  // the system's trust store does not know the throwaway CA
    auto untrusted = started(ex, o);
    EXPECT_EQ(co_await settled_failure(*untrusted, Ms(5000)), RedisFailure::kTls);
    o.connect.address.tls = false;  // plain RESP to a TLS port
    auto plain = started(ex, o);
    EXPECT_NE(co_await settled_failure(*plain, Ms(5000)), std::nullopt);
    c->close();
    untrusted->close();
    plain->close();
  });
}

TEST(RedisClientTest, AMissingCaFileIsAnErrorAtCreation) {
  net::io_context io;
  RedisClientOptions o;
  o.connect.address = {"127.0.0.1", 6379, 0, "", "", true};
  o.connect.ca_file = "/nonexistent/ca.pem";
  EXPECT_FALSE(RedisClient::create(io.get_executor(), o).has_value());
}

}  // namespace
}  // namespace tollgate::cluster

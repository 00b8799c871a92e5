// Runtime keys shared through Redis: two syncs (two replicas' key holders) against a real
// redis-server; the store's reply parsed strictly.
#include "cluster/key_sync.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "async_test.hpp"
#include "redis_server.hpp"

namespace tollgate::cluster {
namespace {

using namespace test;

auth::RuntimeKey runtime_key(std::string id) {
  auth::RuntimeKey k;
  k.id = std::move(id);
  k.client = "bot";
  k.digest = crypto::sha256("secret-of-" + k.id);
  k.prefix = "tg-abcd";
  k.created = 1'700'000'000;
  return k;
}

/// One replica's keys: what the sync reads, and how often it adopted a merge.
struct Replica {
  auth::KeysFile file;
  int adopted = 0;
  LocalKeys local() {
    return {[this]() -> const auth::KeysFile& { return file; },
            [this](auth::KeysFile f) {
              file = std::move(f);
              ++adopted;
            }};
  }
  bool has(std::string_view id) const {
    return std::any_of(file.keys.begin(), file.keys.end(),
                       [&](const auto& k) { return k.id == id; });
  }
  bool revoked(std::string_view id) const {
    return std::find(file.revoked.begin(), file.revoked.end(), id) != file.revoked.end();
  }
};

config::ClusterConfig cluster_of(const RedisServer& server) {
  config::ClusterConfig c;
  c.redis.host = "127.0.0.1";
  c.redis.port = server.port();
  c.key_prefix = "t:";
  c.timeout = std::chrono::milliseconds(500);
  return c;
}

TEST(KeySyncTest, ChangesReachTheOtherReplicaAndRedisHoldsDigestsOnly) {
  RedisServer server;
  Replica a, b;
  a.file.keys.push_back(runtime_key("k-old"));  // created before: pushed at start
  run_async([&](net::any_io_executor ex) -> net::awaitable<void> {
    auto sa = KeySync::create(ex, cluster_of(server), a.local(), nullptr);
    auto sb = KeySync::create(ex, cluster_of(server), b.local(), nullptr);
    sa->start();
    sb->start();
    EXPECT_TRUE(co_await eventually([&] { return b.has("k-old"); }, Ms(5000)));

    a.file.keys.push_back(runtime_key("k-new"));
    sa->local_changed();
    auto asked = SteadyClock::now();
    EXPECT_TRUE(co_await eventually([&] { return b.has("k-new"); }, Ms(5000)));
    EXPECT_LT(SteadyClock::now() - asked, Ms(500)) << "a message, not the poll, brought it";

    std::erase_if(b.file.keys, [](const auto& k) { return k.id == "k-new"; });
    b.file.revoked.push_back("k-new");
    sb->local_changed();
    EXPECT_TRUE(
        co_await eventually([&] { return a.revoked("k-new") && !a.has("k-new"); }, Ms(5000)));
    EXPECT_TRUE(a.has("k-old"));

    auto probe = started(ex, client_options(server));
    EXPECT_TRUE(co_await eventually_answers(*probe, Ms(5000)));
    auto all = co_await cmd(*probe, "HGETALL", "t:keys");
    EXPECT_EQ(all.reply.elements.size(), 2u) << "k-old only: the revoked record is deleted";
    if (all.reply.elements.size() == 2) {
      EXPECT_EQ(all.reply.elements[0].text, "k-old");
      EXPECT_EQ(all.reply.elements[1].text.find("secret-of"), std::string::npos);
      EXPECT_EQ(auth::decode_runtime_key(all.reply.elements[1].text), runtime_key("k-old"));
    }
    // A replica that still holds a revoked key cannot add it back.
    auto again = co_await cmd(*probe, "SISMEMBER", "t:keys:revoked", "k-new");
    EXPECT_EQ(again.reply, RedisReply::of_integer(1));
    probe->close();
    sa->close();
    sb->close();
  });
}

TEST(KeySyncTest, AnEmptiedStoreIsFilledAgainFromTheReplicas) {
  RedisServer server;
  Replica a, b;
  a.file.keys.push_back(runtime_key("k-a"));
  b.file.revoked.push_back("cfg-1");
  run_async([&](net::any_io_executor ex) -> net::awaitable<void> {
    auto sa = KeySync::create(ex, cluster_of(server), a.local(), nullptr);
    auto sb = KeySync::create(ex, cluster_of(server), b.local(), nullptr);
    sa->start();
    sb->start();
    EXPECT_TRUE(co_await eventually([&] { return b.has("k-a") && a.revoked("cfg-1"); }, Ms(5000)));
    server.restart();                                    // no persistence: empty
    a.file.keys.push_back(runtime_key("k-while-away"));  // created before the sync reconnects
    sa->local_changed();
    EXPECT_TRUE(co_await eventually([&] { return b.has("k-while-away"); }, Ms(10000)));
    auto probe = started(ex, client_options(server));
    EXPECT_TRUE(co_await eventually_answers(*probe, Ms(5000)));
    auto revoked = co_await cmd(*probe, "SMEMBERS", "t:keys:revoked");
    EXPECT_EQ(revoked.reply, RedisReply::of_array({RedisReply::of_string("cfg-1")}));
    auto keys = co_await cmd(*probe, "HLEN", "t:keys");
    EXPECT_EQ(keys.reply, RedisReply::of_integer(2));
    probe->close();
    sa->close();
    sb->close();
  });
}

TEST(KeyStoreParse, StrictAboutTheShape) {
  using R = RedisReply;
  auto k = runtime_key("k1");
  auto good =
      R::of_array({R::of_string("7"),
                   R::of_array({R::of_string("k1"), R::of_string(auth::encode_runtime_key(k)),
                                R::of_string("k2"), R::of_string("garbage")}),
                   R::of_array({R::of_string("cfg-1")})});
  auto parsed = parse_key_store(good);
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->version, 7);
  EXPECT_EQ(parsed->file.keys, std::vector<auth::RuntimeKey>{k})
      << "a record that does not decode is skipped";
  EXPECT_EQ(parsed->file.revoked, std::vector<std::string>{"cfg-1"});
  auto mismatched = good;
  mismatched.elements[1].elements[0] = R::of_string("other-id");
  EXPECT_TRUE(parse_key_store(mismatched)->file.keys.empty()) << "a record filed under another id";
  EXPECT_FALSE(parse_key_store(R::of_array({R::of_string("x"), R::of_array({}), R::of_array({})})));
  EXPECT_FALSE(parse_key_store(
      R::of_array({R::of_string("1"), R::of_array({R::of_string("k1")}), R::of_array({})})));
  EXPECT_FALSE(parse_key_store(R::of_integer(1)));
}

}  // namespace
}  // namespace tollgate::cluster

#include "cluster/shared_objects.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "async_test.hpp"
#include "cluster/object_record.hpp"
#include "redis_server.hpp"

namespace tollgate::cluster {
namespace {

using namespace test;
using routing::Billing;

ObjectRecord record(Billing billing = Billing::kSettled) {
  return {{"eastus-ptu", "gpt-4o", "team-a", "acme"}, billing};
}

TEST(ObjectRecordTest, RoundTripsEveryFieldAndBilling) {
  for (auto billing : {Billing::kSettled, Billing::kPending}) {
    auto r = record(billing);
    EXPECT_EQ(decode_object(encode_object(r)), r);
  }
  ObjectRecord anonymous{{"b", "", "", ""}, Billing::kSettled};
  EXPECT_EQ(encode_object(anonymous), "o1s1:b0:0:0:");
  EXPECT_EQ(decode_object("o1s1:b0:0:0:"), anonymous);
  ObjectRecord odd{{std::string("a:b\0c", 5), "7:x", "", "é"}, Billing::kPending};
  EXPECT_EQ(decode_object(encode_object(odd)), odd);
}

TEST(ObjectRecordTest, BillingSitsWhereTheScriptsReadIt) {
  EXPECT_EQ(encode_object(record(Billing::kPending))[kBillingOffset], kBillingPending);
  EXPECT_EQ(encode_object(record(Billing::kSettled))[kBillingOffset], kBillingSettled);
  EXPECT_EQ(kRecordVersion, "o1");  // the scripts in shared_objects.cpp spell it
}

TEST(ObjectRecordTest, AnythingButOneValidRecordIsNothing) {
  for (std::string_view bad : {"", "o", "o1", "o1s", "o2s1:b0:0:0:", "o1x1:b0:0:0:", "O1s1:b0:0:0:",
                               "o1s1:b0:0:0", "o1s1:b0:0:0:x", "o1s0:0:0:0:", "o1s01:b0:0:0:",
                               "o1s+1:b0:0:0:", "o1s-1:b0:0:0:", "o1s9:b0:0:0:", "o1s1b0:0:0:",
                               "o1s:b0:0:0:", "o1s1:b0:0:0:1:", "o1s99999:b", "o1s1025:",
                               "o1s 1:b0:0:0:"}) {
    EXPECT_EQ(decode_object(bad), std::nullopt) << bad;
  }
  ObjectRecord long_name{{std::string(kMaxFieldBytes + 1, 'x'), "", "", ""}, Billing::kSettled};
  EXPECT_EQ(decode_object(encode_object(long_name)), std::nullopt);
  ObjectRecord longest{{std::string(kMaxFieldBytes, 'x'), "", "", ""}, Billing::kSettled};
  EXPECT_EQ(decode_object(encode_object(longest)), longest);
}

routing::StoredObject stored(std::string id, Billing billing, routing::TimeMs ms = 60'000) {
  return {std::move(id), record(billing).owner, billing, ms};
}

TEST(SharedObjectsTest, SavesFetchesAndErasesWithTheEntrysLifetime) {
  RedisServer server;
  run_async([&](net::any_io_executor ex) -> net::awaitable<void> {
    auto c = started(ex, client_options(server));
    EXPECT_TRUE(co_await eventually_answers(*c, Ms(5000)));
    auto objects = std::make_shared<SharedObjects>(c, "t:");
    objects->save(stored("resp_1", Billing::kPending, 30'000));
    co_await sleep_for(Ms(50));  // the save is fire-and-forget
    auto ttl = co_await cmd(*c, "PTTL", "t:object:resp_1");
    EXPECT_GT(ttl.reply.integer, 29'000);
    EXPECT_LE(ttl.reply.integer, 30'000);
    co_await cmd(*c, "SET", "t:object:bad", "o1q1:b0:0:0:");
    std::vector<std::string> ids{"resp_1", "missing", "bad"};
    auto got = co_await objects->fetch(ids);
    EXPECT_FALSE(got.failure);
    EXPECT_EQ(got.records.size(), 3u);
    if (got.records.size() == 3) {
      EXPECT_EQ(got.records[0], record(Billing::kPending));
      EXPECT_EQ(got.records[1], std::nullopt);
      EXPECT_EQ(got.records[2], std::nullopt);
    }
    objects->erase("resp_1");
    co_await sleep_for(Ms(50));
    EXPECT_EQ((co_await cmd(*c, "EXISTS", "t:object:resp_1")).reply.integer, 0);
    c->close();
  });
}

TEST(SharedObjectsTest, ExactlyOneClaimWinsAndASaveNeverReopensIt) {
  RedisServer server;
  run_async([&](net::any_io_executor ex) -> net::awaitable<void> {
    auto c = started(ex, client_options(server));
    EXPECT_TRUE(co_await eventually_answers(*c, Ms(5000)));
    auto a = std::make_shared<SharedObjects>(c, "t:");
    auto b = std::make_shared<SharedObjects>(c, "t:");
    EXPECT_EQ(co_await a->claim("resp_2"), BillingClaim::kUnknown);
    a->save(stored("resp_2", Billing::kPending));
    a->save(stored("resp_2", Billing::kSettled));  // a local claim's save: the store decides
    EXPECT_EQ(co_await b->claim("resp_2"), BillingClaim::kWon);
    EXPECT_EQ(co_await a->claim("resp_2"), BillingClaim::kLost);
    b->save(stored("resp_2", Billing::kPending, 90'000));  // a stale copy sliding its lifetime
    co_await sleep_for(Ms(50));
    EXPECT_EQ(co_await a->claim("resp_2"), BillingClaim::kLost);
    EXPECT_GT((co_await cmd(*c, "PTTL", "t:object:resp_2")).reply.integer, 60'000);
    c->close();
    EXPECT_EQ(co_await a->claim("resp_2"), BillingClaim::kUnavailable);
  });
}

}  // namespace
}  // namespace tollgate::cluster

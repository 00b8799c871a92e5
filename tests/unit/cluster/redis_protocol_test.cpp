#include "cluster/redis_protocol.hpp"

#include <gtest/gtest.h>

#include "cluster/backoff.hpp"

namespace tollgate::cluster {
namespace {

using Kind = RedisReply::Kind;

TEST(RedisProtocolTest, EncodesCommandsBinarySafe) {
  using namespace std::string_literals;
  std::string out = "prefix"s;
  std::string_view argv[] = {"SET", "k", std::string_view("a\0\r\nb", 5)};
  append_command(out, argv);
  EXPECT_EQ(out, "prefix*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\na\0\r\nb\r\n"s);
}

TEST(RedisProtocolTest, DecodesEveryReplyKindFedByteByByte) {
  using namespace std::string_literals;
  const std::string wire =
      "+OK\r\n-ERR bad\r\n:-42\r\n$3\r\na\0b\r\n$-1\r\n*2\r\n:1\r\n*1\r\n$0\r\n\r\n"s;
  std::vector<RedisReply> got;
  RedisDecoder d;
  RedisReply r;
  for (char c : wire) {
    ASSERT_TRUE(d.feed({&c, 1}));
    while (d.next(r) == RedisDecoder::Status::kReply) got.push_back(r);
  }
  ASSERT_EQ(got.size(), 6u);
  EXPECT_EQ(got[0], RedisReply::of_status("OK"));
  EXPECT_EQ(got[1], RedisReply::of_error("ERR bad"));
  EXPECT_TRUE(got[1].is_error("ERR"));
  EXPECT_FALSE(got[1].is_error("ER"));
  EXPECT_EQ(got[2], RedisReply::of_integer(-42));
  EXPECT_EQ(got[3], RedisReply::of_string(std::string("a\0b", 3)));
  EXPECT_EQ(got[4], RedisReply::nil());
  EXPECT_EQ(got[5], RedisReply::of_array({RedisReply::of_integer(1),
                                          RedisReply::of_array({RedisReply::of_string("")})}));
  EXPECT_EQ(to_string(got[5].kind), "array");
}

TEST(RedisProtocolTest, GarbageIsAnError) {
  RedisDecoder d;
  RedisReply r;
  ASSERT_TRUE(d.feed("?what\r\n"));
  EXPECT_EQ(d.next(r), RedisDecoder::Status::kError);
  EXPECT_FALSE(d.error().empty());
}

TEST(BackoffTest, DoublesWithJitterUpToTheCeilingAndResets) {
  Backoff b({std::chrono::milliseconds(50), std::chrono::milliseconds(2000)}, 7);
  std::int64_t ceiling = 50;
  for (int i = 0; i < 10; ++i) {
    auto d = b.next().count();
    EXPECT_GE(d, ceiling / 2) << i;
    EXPECT_LE(d, ceiling) << i;
    ceiling = std::min<std::int64_t>(ceiling * 2, 2000);
  }
  b.reset();
  EXPECT_LE(b.next().count(), 50);
  Backoff same({std::chrono::milliseconds(50), std::chrono::milliseconds(2000)}, 7);
  Backoff again({std::chrono::milliseconds(50), std::chrono::milliseconds(2000)}, 7);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(same.next(), again.next());
}

}  // namespace
}  // namespace tollgate::cluster

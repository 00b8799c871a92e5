#include "tollgate/config/redis_url.hpp"

#include <gtest/gtest.h>

namespace tollgate::config {
namespace {

RedisAddress parsed(std::string_view url) {
  auto r = parse_redis_url(url);
  if (auto* e = std::get_if<RedisUrlError>(&r)) {
    ADD_FAILURE() << url << ": " << e->message;
    return {};
  }
  return std::get<RedisAddress>(r);
}

std::string error_of(std::string_view url) {
  auto r = parse_redis_url(url);
  auto* e = std::get_if<RedisUrlError>(&r);
  return e != nullptr ? e->message : "(parsed)";
}

TEST(RedisUrlTest, HostAloneTakesTheDefaults) {
  EXPECT_EQ(parsed("redis://cache.internal"),
            (RedisAddress{"cache.internal", 6379, 0, "", "", false}));
  EXPECT_EQ(parsed("redis://10.0.0.5/"), (RedisAddress{"10.0.0.5", 6379, 0, "", "", false}));
}

TEST(RedisUrlTest, EveryPart) {
  EXPECT_EQ(parsed("rediss://app:s%40cret%3A1@redis.example.com:6380/3"),
            (RedisAddress{"redis.example.com", 6380, 3, "app", "s@cret:1", true}));
  EXPECT_EQ(parsed("redis://:pw@127.0.0.1:7000/0"),
            (RedisAddress{"127.0.0.1", 7000, 0, "", "pw", false}));
  EXPECT_EQ(parsed("redis://[::1]:6390/15"), (RedisAddress{"::1", 6390, 15, "", "", false}));
  EXPECT_EQ(parsed("redis://[0::0:1]").host, "::1");  // IPv6 in its canonical form
}

TEST(RedisUrlTest, ErrorsNameThePart) {
  EXPECT_NE(error_of("http://h:6379").find("scheme must be redis:// or rediss://"),
            std::string::npos);
  EXPECT_NE(error_of("redis://h:0").find("port must be a number from 1 to 65535"),
            std::string::npos);
  EXPECT_NE(error_of("redis://h:65536").find("port"), std::string::npos);
  EXPECT_NE(error_of("redis://h:/0").find("port"), std::string::npos);
  EXPECT_NE(error_of("redis://h/x").find("db must be a number"), std::string::npos);
  EXPECT_NE(error_of("redis://h/-1").find("db must be a number"), std::string::npos);
  EXPECT_NE(error_of("redis://h/1/2").find("db must be a number"), std::string::npos);
  EXPECT_NE(error_of("redis://h/99999999999").find("db must be a number"), std::string::npos);
  EXPECT_NE(error_of("redis://h/0?timeout=1").find("query"), std::string::npos);
  EXPECT_NE(error_of("redis://h/0#x").find("fragment"), std::string::npos);
  EXPECT_EQ(parsed("redis://alice@h").user, "alice");  // its password may come from the config
  EXPECT_NE(error_of("redis:///0").find("empty host"), std::string::npos);
  EXPECT_NE(error_of("redis:h").find("no host"), std::string::npos);
  EXPECT_NE(error_of("redis://h%2e").find("host must be a DNS name"), std::string::npos);
  EXPECT_NE(error_of("redis://[v1.x]").find("host must be a DNS name"), std::string::npos);
  EXPECT_NE(error_of("not a url").find("not a URL"), std::string::npos);
}

TEST(RedisUrlTest, RenderedUrlParsesBackToTheSameAddress) {
  for (const RedisAddress& a : {RedisAddress{"h", 6379, 0, "", "", false},
                                RedisAddress{"::1", 1, 7, "u s", "p@:/?#%", true},
                                RedisAddress{"10.1.2.3", 65535, 2147483647, "", "x", false},
                                RedisAddress{"v1.0.0.", 6379, 0, "", "", false}}) {
    EXPECT_EQ(parsed(to_url(a)), a) << to_url(a);
  }
  EXPECT_EQ(to_url(RedisAddress{"h", 6379, 2, "u", "p w", true}), "rediss://u:p%20w@h:6379/2");
}

}  // namespace
}  // namespace tollgate::config

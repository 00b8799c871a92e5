// The count cache: hits only on the same model and the same bytes; bounded in bytes.
#include "tollgate/tokenize/count_cache.hpp"

#include <gtest/gtest.h>

#include <string>

namespace tollgate::tokenize {
namespace {

std::string message(int i, std::size_t size = 100) {
  std::string m = R"({"role":"user","content":")" + std::to_string(i) + "-";
  m.resize(size - 2, 'x');
  return m + "\"}";
}

TEST(CountCache, HitsTheSameModelAndBytesOnly) {
  CountCache cache(1 << 20);
  auto m = message(1);
  EXPECT_FALSE(cache.find("gpt-4o", m));
  cache.put("gpt-4o", m, TokenEstimate{42, true});
  auto hit = cache.find("gpt-4o", m);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->tokens, 42u);
  EXPECT_TRUE(hit->exact);
  EXPECT_FALSE(cache.find("gpt-4", m)) << "another model, another encoding";
  auto other = m;
  other[other.size() - 3] = 'y';  // one byte differs
  EXPECT_FALSE(cache.find("gpt-4o", other));
  auto st = cache.stats();
  EXPECT_EQ(st.hits, 1u);
  EXPECT_EQ(st.misses, 3u);
  EXPECT_EQ(st.entries, 1u);
}

TEST(CountCache, StaysWithinItsBytesDroppingTheLeastRecentlyUsed) {
  CountCache cache(64 << 10);  // 4 KiB per shard
  for (int i = 0; i < 5'000; ++i) cache.put("gpt-4o", message(i), TokenEstimate{1, true});
  auto st = cache.stats();
  EXPECT_LE(st.bytes, 64u << 10);
  EXPECT_GT(st.entries, 100u);
  EXPECT_TRUE(cache.find("gpt-4o", message(4'999))) << "the newest stays";
  EXPECT_FALSE(cache.find("gpt-4o", message(0))) << "the oldest went first";
}

TEST(CountCache, AMessageOverAnEighthOfAShardIsNotKept) {
  CountCache cache(16 * 8 * 1024);  // 8 KiB per shard: at most ~1 KiB per message
  auto big = message(1, 4'000);
  cache.put("gpt-4o", big, TokenEstimate{900, true});
  EXPECT_FALSE(cache.find("gpt-4o", big));
  EXPECT_EQ(cache.stats().bytes, 0u);
}

}  // namespace
}  // namespace tollgate::tokenize

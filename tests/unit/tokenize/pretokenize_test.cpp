// Differential tests of the fast paths against the reference paths:
//  * the ASCII pre-tokenizer + PCRE2 fallback vs PCRE2 alone, on random strings over an alphabet
//    chosen to hit every decision (letters of both cases, digits, all ASCII whitespace and
//    punctuation, apostrophes, and non-ASCII characters of each class right at the boundaries);
//  * merge_large (segment tree) vs tiktoken's vector-scan merge on random pieces.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <utility>
#include <vector>

#include "bpe.hpp"
#include "encoding_impl.hpp"
#include "test_support.hpp"
#include "utf8.hpp"

namespace tollgate::tokenize {
namespace {

using Pieces = std::vector<std::pair<std::size_t, std::size_t>>;

Pieces pieces(const detail::PreTokenizer& pre, const std::string& text, bool regex_only) {
  Pieces out;
  const auto* base = reinterpret_cast<const unsigned char*>(text.data());
  auto sink = [&](const unsigned char* p, std::size_t n) {
    out.emplace_back(static_cast<std::size_t>(p - base), n);
  };
  if (regex_only) {
    pre.split_regex_only(text, sink);
  } else {
    pre.split(text, sink);
  }
  return out;
}

const std::vector<std::string>& alphabet() {
  static const std::vector<std::string> a = [] {
    std::vector<std::string> v;
    for (int c = 0; c < 128; ++c) v.emplace_back(1, static_cast<char>(c));
    // Over-weight the characters the scanner branches on.
    for (const char* s : {"a", "s", "t", "l", "r", "v",  "e",  "d",  "m", "S", "L", "R", "E", "A",
                          "'", "'", " ", " ", " ", "\n", "\r", "\t", "1", "2", "/", "/", "!"}) {
      v.emplace_back(s);
    }
    for (const char* s : {"\u017f",                      // ſ: folds to s
                          "\u212a",                      // Kelvin sign: folds to k
                          "\u00e9", "\u00c9", "\u01c5",  // Ll, Lu, Lt
                          "\u02b0",                      // Lm
                          "\u6771",                      // Lo
                          "\u0301", "\u0903",            // Mn, Mc
                          "\u0663", "\u00b2", "\u2167",  // Nd, No, Nl
                          "\u0085", "\u00a0", "\u2003", "\u3000", "\u2028",     "\u180e",
                          "\ufeff", "\u200b", "\u2014", "\u00bf", "\U0001F600", "\uFFFD"}) {
      v.emplace_back(s);
    }
    return v;
  }();
  return a;
}

std::string random_text(std::mt19937& rng, std::size_t max_chars) {
  const auto& a = alphabet();
  std::string s;
  const std::size_t n = rng() % (max_chars + 1);
  for (std::size_t i = 0; i < n; ++i) s += a[rng() % a.size()];
  return s;
}

class PreTokenizerTest : public testing::WithTokenizers {};

TEST_F(PreTokenizerTest, FastPathSplitsExactlyLikePcre2) {
  std::mt19937 rng(20261121);
  for (const Encoding* enc : {&cl100k(), &o200k()}) {
    const auto& pre = enc->impl().pre;
    for (int iter = 0; iter < 60000; ++iter) {
      const std::string text = random_text(rng, 24);
      ASSERT_EQ(pieces(pre, text, false), pieces(pre, text, true))
          << enc->name() << " on \"" << text << "\"";
    }
  }
}

TEST_F(PreTokenizerTest, FastPathOnAsciiHeavyText) {
  std::mt19937 rng(7);
  const std::string words[] = {
      "Hello",   "world",         "it's",    "DON'T",  "I'LL", "x",    "HTMLParser", "iPhone", "  ",
      "\n",      "\r\n",          "\t",      "123456", "//",   "!!\n", "a/b",        " '",     "'s",
      "'\u017f", "\u00e9t\u00e9", " \u00a0", "\u0085"};
  for (const Encoding* enc : {&cl100k(), &o200k()}) {
    const auto& pre = enc->impl().pre;
    for (int iter = 0; iter < 20000; ++iter) {
      std::string text;
      for (int k = static_cast<int>(rng() % 12); k >= 0; --k)
        text += words[rng() % std::size(words)];
      ASSERT_EQ(pieces(pre, text, false), pieces(pre, text, true))
          << enc->name() << " on \"" << text << "\"";
    }
  }
}

TEST_F(PreTokenizerTest, LargeMergeEqualsVectorScanMerge) {
  std::mt19937 rng(99);
  const std::string alphabets[] = {
      "abcdefghijklmnopqrstuvwxyz", "aaab", " \n", "0123456789", "!=-*#",
      "\xe6\x9d\xb1\xe4\xba\xac"};
  detail::MergeScratch scratch;
  for (const Encoding* enc : {&cl100k(), &o200k()}) {
    const auto& table = enc->impl().table;
    for (int iter = 0; iter < 3000; ++iter) {
      const std::string& a = alphabets[rng() % std::size(alphabets)];
      std::string piece;
      const std::size_t n = 2 + rng() % (detail::kLargePieceBytes - 2);
      for (std::size_t i = 0; i < n; ++i) piece += a[rng() % a.size()];
      const auto* p = reinterpret_cast<const unsigned char*>(piece.data());
      std::vector<TokenId> small, large;
      detail::merge_small(table, p, piece.size(), [&](detail::Rank r) { small.push_back(r); });
      detail::merge_large(table, p, piece.size(), scratch,
                          [&](detail::Rank r) { large.push_back(r); });
      ASSERT_EQ(small, large) << enc->name() << " on \"" << piece << "\"";
    }
  }
}

TEST(Utf8, ValidatesLikePcre2) {
  EXPECT_TRUE(detail::is_valid_utf8(""));
  EXPECT_TRUE(detail::is_valid_utf8("plain ascii text, longer than eight bytes"));
  EXPECT_TRUE(detail::is_valid_utf8("\u00e9\u6771\U0001F600\U0010FFFF"));
  EXPECT_FALSE(detail::is_valid_utf8("\xc0\x80"));          // overlong
  EXPECT_FALSE(detail::is_valid_utf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(detail::is_valid_utf8("\xf4\x90\x80\x80"));  // > U+10FFFF
  EXPECT_FALSE(detail::is_valid_utf8("abcdefgh\xe6\x9d"));  // truncated
}

TEST(Utf8, RepairsLikeTextDecoder) {
  auto repaired = [](std::string_view s) {
    std::string out;
    detail::repair_utf8(s, out);
    return out;
  };
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(repaired("a\xff"
                     "b"),
            "a" + r + "b");
  EXPECT_EQ(repaired("\xe2\x82"
                     "a"),
            r + "a");  // one U+FFFD per maximal subpart
  EXPECT_EQ(repaired("\xf0\x9f\x98"), r);
  EXPECT_EQ(repaired("\xed\xa0\x80"), r + r + r);  // ED is not followed by A0..BF
  EXPECT_EQ(repaired("\xc0\x80"), r + r);
  EXPECT_EQ(repaired("\xe0\xa0"), r);
  EXPECT_EQ(repaired("ok \u00e9"), "ok \u00e9");
}

}  // namespace
}  // namespace tollgate::tokenize

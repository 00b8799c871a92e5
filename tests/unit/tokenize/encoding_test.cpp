#include "tollgate/tokenize/encoding.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "pretokenize.hpp"
#include "test_support.hpp"

namespace tollgate::tokenize {
namespace {

using testing::WithTokenizers;
using Ids = std::vector<TokenId>;

class EncodingTest : public WithTokenizers {};

// Expected ids come from tiktoken@1.0.22 (the oracle test covers megabytes more).
TEST_F(EncodingTest, MatchesTiktokenOnKnownStrings) {
  EXPECT_EQ(cl100k().encode("hello world"), (Ids{15339, 1917}));
  EXPECT_EQ(o200k().encode("hello world"), (Ids{24912, 2375}));
  // Whitespace at the end of the text: tiktoken@1.0.22's pattern, not Python tiktoken >= 0.8's.
  EXPECT_EQ(cl100k().encode("a\n "), (Ids{64, 198, 220}));
  EXPECT_EQ(cl100k().encode("hello  \n\n  "), (Ids{15339, 19124, 256}));
  EXPECT_EQ(o200k().encode("x\n \n "), (Ids{87, 47812, 220}));
}

TEST_F(EncodingTest, EmptyInputHasNoTokens) {
  EXPECT_TRUE(cl100k().encode("").empty());
  EXPECT_EQ(o200k().count(""), 0u);
}

TEST_F(EncodingTest, SpecialTokenTextIsOrdinaryText) {
  const Ids ids = cl100k().encode("<|endoftext|>");
  EXPECT_GT(ids.size(), 1u);
  for (TokenId id : ids) EXPECT_LT(id, 100256u);
}

TEST_F(EncodingTest, CountEqualsEncodeSize) {
  const std::string text = "Tollgate counts tokens exactly: 12345 💡 Привет мир! 'ſ \r\n\t x";
  for (const Encoding* enc : {&cl100k(), &o200k()}) {
    EXPECT_EQ(enc->count(text), enc->encode(text).size()) << enc->name();
  }
}

TEST_F(EncodingTest, DecodeRestoresValidUtf8Exactly) {
  const std::string text = "naïve café — 東京 🇯🇵 \u0085 \uFEFF \u180E 'ſ\r\n  end";
  for (const Encoding* enc : {&cl100k(), &o200k()}) {
    std::string back;
    ASSERT_TRUE(enc->decode(enc->encode(text), back));
    EXPECT_EQ(back, text) << enc->name();
  }
}

TEST_F(EncodingTest, DecodeRejectsUnknownIds) {
  std::string out;
  const TokenId ids[] = {15339, 100257};
  EXPECT_FALSE(cl100k().decode(ids, out));
  EXPECT_EQ(out, "hello");
}

TEST_F(EncodingTest, InvalidUtf8IsEncodedAsTheReplacementCharacter) {
  // Each maximal invalid subsequence becomes one U+FFFD, as TextDecoder / JSON decoding do.
  EXPECT_EQ(cl100k().encode("a\xff"
                            "b"),
            cl100k().encode("a\uFFFD"
                            "b"));
  EXPECT_EQ(o200k().encode("\xe2\x82"
                           "a"),
            o200k().encode("\uFFFD"
                           "a"));
  EXPECT_EQ(o200k().encode("\xed\xa0\x80"), o200k().encode("\uFFFD\uFFFD\uFFFD"));  // a surrogate
  EXPECT_EQ(cl100k().encode("\xf0\x9f\x98"), cl100k().encode("\uFFFD"));
}

TEST_F(EncodingTest, TokenOfLooksUpExactBytes) {
  EXPECT_EQ(cl100k().token_of("hello"), std::optional<TokenId>(15339));
  EXPECT_EQ(cl100k().token_of("!"), std::optional<TokenId>(0));
  EXPECT_FALSE(cl100k().token_of("").has_value());
  EXPECT_FALSE(cl100k().token_of("qzxqzxqzxqzx").has_value());
}

TEST_F(EncodingTest, TablesAreCompact) {
  EXPECT_EQ(cl100k().token_count(), 100256u);
  EXPECT_EQ(o200k().token_count(), 199998u);
  EXPECT_LT(cl100k().memory_bytes() + o200k().memory_bytes(), 40u << 20);
}

TEST_F(EncodingTest, ConcurrentEncodesOnOneInstanceAgree) {
  std::string text;
  for (int i = 0; i < 200; ++i) text += "The quick brown fox, 東京, 12345, 'll \n\n ";
  text += std::string(3000, 'q');  // a long piece: merge_large and its thread-local scratch
  const Ids expected = o200k().encode(text);
  std::vector<std::thread> threads;
  std::vector<int> ok(8, 0);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      int good = 0;
      for (int i = 0; i < 20; ++i) good += o200k().encode(text) == expected;
      ok[static_cast<std::size_t>(t)] = good;
    });
  }
  for (auto& th : threads) th.join();
  for (int good : ok) EXPECT_EQ(good, 20);
}

// Hostile inputs must stay far from quadratic: 1 MB each, generous 2 s bound (Release builds
// take ~0.01–0.3 s; a quadratic merge or regex would take minutes).
TEST_F(EncodingTest, AdversarialMegabyteInputsAreFast) {
  constexpr std::size_t kMb = 1 << 20;
  std::mt19937 rng(42);
  auto random_of = [&](std::string_view alphabet) {
    std::string s(kMb, ' ');
    for (char& c : s) c = alphabet[rng() % alphabet.size()];
    return s;
  };
  auto repeat = [](std::string_view unit) {
    std::string s;
    while (s.size() < kMb) s += unit;
    return s;
  };
  const std::pair<const char*, std::string> inputs[] = {
      {"one letter", std::string(kMb, 'a')},
      {"random letters", random_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")},
      {"spaces", std::string(kMb, ' ')},
      {"digits", random_of("0123456789")},
      {"newlines", std::string(kMb, '\n')},
      {"spaces then letter", std::string(kMb - 1, ' ') + "x"},
      {"punctuation", random_of("!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~")},
      {"upper case", std::string(kMb, 'A')},
      {"space-newline", repeat(" \n")},
      {"CJK", repeat("\u6771\u4eac\u90fd\u5e81")},
      {"combining marks", "a" + repeat("\u0301")},
      {"NBSP", repeat("\u00a0")},
      {"long s contractions", repeat("'\u017f")},
      {"invalid UTF-8", std::string(kMb, '\xff')},
  };
  const auto fallbacks_before = detail::g_regex_fallbacks.load();
  for (const auto& [name, text] : inputs) {
    for (const Encoding* enc : {&cl100k(), &o200k()}) {
      const auto t0 = std::chrono::steady_clock::now();
      const std::size_t n = enc->count(text);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      EXPECT_GT(n, 0u);
      EXPECT_LT(s, 2.0) << name << " with " << enc->name() << " took " << s << " s";
    }
  }
  EXPECT_EQ(detail::g_regex_fallbacks.load(), fallbacks_before) << "PCRE2 failed on some input";
}

TEST(EncodingLoad, MissingFileNamesPathAndExpectedHash) {
  auto r = Encoding::load(EncodingKind::kO200kBase, "/nonexistent-dir");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("/nonexistent-dir/o200k_base.tiktoken"), std::string::npos)
      << r.error().message;
  EXPECT_NE(r.error().message.find(expected_sha256(EncodingKind::kO200kBase)), std::string::npos);
}

class TempDir {
 public:
  TempDir()
      : path_(std::filesystem::temp_directory_path() /
              ("tollgate-tok-" + std::to_string(std::random_device{}()))) {
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }
  void write(const std::string& name, const std::string& content) const {
    std::ofstream(path_ / name, std::ios::binary) << content;
  }

 private:
  std::filesystem::path path_;
};

std::string all_bytes_rank_file() {
  static constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (int b = 0; b < 256; ++b) {
    out += kB64[b >> 2];
    out += kB64[(b & 3) << 4];
    out += "== " + std::to_string(b) + "\n";
  }
  return out;
}

TEST(EncodingLoad, CorruptFileNamesPathAndBothHashes) {
  TempDir dir;
  dir.write("cl100k_base.tiktoken", all_bytes_rank_file());
  auto r = Encoding::load(EncodingKind::kCl100kBase, dir.path());
  ASSERT_FALSE(r.ok());
  const std::string& m = r.error().message;
  EXPECT_NE(m.find((dir.path() / "cl100k_base.tiktoken").string()), std::string::npos) << m;
  EXPECT_NE(m.find("sha256"), std::string::npos) << m;
  EXPECT_NE(m.find(expected_sha256(EncodingKind::kCl100kBase)), std::string::npos) << m;
}

TEST(EncodingLoad, MalformedLinesAreReportedWithLineNumbers) {
  TempDir dir;
  dir.write("bad.tiktoken", all_bytes_rank_file() + "!!!! 256\n");
  auto r =
      Encoding::load_file(EncodingKind::kCl100kBase, dir.path() / "bad.tiktoken", HashCheck::kSkip);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("bad.tiktoken:257: malformed rank file"), std::string::npos)
      << r.error().message;
}

TEST(EncodingLoad, TinyVocabularyWithoutHashCheckEncodesBytes) {
  TempDir dir;
  dir.write("tiny.tiktoken", all_bytes_rank_file() + "aGk= 256\n");  // "hi"
  auto r = Encoding::load_file(EncodingKind::kCl100kBase, dir.path() / "tiny.tiktoken",
                               HashCheck::kSkip);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ((*r)->encode("hi!"), (Ids{256, '!'}));
  EXPECT_EQ((*r)->encode("ih"), (Ids{'i', 'h'}));
}

TEST(ModelMap, MapsModelFamiliesToEncodings) {
  constexpr auto o200k = EncodingKind::kO200kBase;
  constexpr auto cl100k = EncodingKind::kCl100kBase;
  for (const char* m : {"gpt-4o", "gpt-4o-mini-2024-07-18", "chatgpt-4o-latest", "gpt-4.1-nano",
                        "gpt-4.5-preview", "gpt-5", "gpt-5-mini", "o1", "o1-mini", "o3-mini",
                        "o4-mini", "ft:gpt-4o-2024-08-06:org::abc", "GPT-4o"}) {
    EXPECT_EQ(encoding_for_model(m), o200k) << m;
  }
  for (const char* m : {"gpt-4", "gpt-4-0613", "gpt-4-turbo", "gpt-4-32k", "gpt-35-turbo",
                        "gpt-3.5-turbo-16k", "text-embedding-ada-002", "text-embedding-3-large",
                        "davinci-002", "babbage-002", "ft:gpt-3.5-turbo:org::x"}) {
    EXPECT_EQ(encoding_for_model(m), cl100k) << m;
  }
  for (const char* m : {"", "my-deployment", "llama-3", "claude", "gpt-3"}) {
    EXPECT_FALSE(encoding_for_model(m).has_value()) << m;
  }
}

TEST(ModelMap, ParsesEncodingNames) {
  EXPECT_EQ(parse_encoding_name("cl100k_base"), EncodingKind::kCl100kBase);
  EXPECT_EQ(parse_encoding_name("o200k_base"), EncodingKind::kO200kBase);
  EXPECT_FALSE(parse_encoding_name("p50k_base").has_value());
  EXPECT_FALSE(parse_encoding_name("O200K_BASE").has_value());
  EXPECT_EQ(encoding_name(EncodingKind::kO200kBase), "o200k_base");
}

TEST(DataDir, ExplicitBeatsEnvironmentBeatsCompiledDefault) {
  const char* old = std::getenv("TOLLGATE_TOKENIZER_DIR");
  const std::string saved = old ? old : "";
  ::setenv("TOLLGATE_TOKENIZER_DIR", "/from/env", 1);
  EXPECT_EQ(resolve_data_dir("/explicit"), std::filesystem::path("/explicit"));
  EXPECT_EQ(resolve_data_dir(), std::filesystem::path("/from/env"));
  ::unsetenv("TOLLGATE_TOKENIZER_DIR");
  EXPECT_EQ(resolve_data_dir(), std::filesystem::path(std::string(compiled_data_dir())));
  if (old) ::setenv("TOLLGATE_TOKENIZER_DIR", saved.c_str(), 1);
}

}  // namespace
}  // namespace tollgate::tokenize

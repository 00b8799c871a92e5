// Issue 14: encodings are loaded only where a configuration counts with them. The guard for a
// count asked of an encoding that is not loaded: ~4 bytes per token, not exact, reported once.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tollgate/ratelimit/admission.hpp"

namespace tollgate::ratelimit {
namespace {

struct Loaded {
  tokenize::Tokenizers tokenizers;
  std::vector<std::string> reports;
};

// `needed` loaded, and find()'s reports kept.
std::unique_ptr<Loaded> load(tokenize::EncodingSet needed) {
  auto r = tokenize::Tokenizers::load(TOLLGATE_TOKENIZER_DIR, needed);
  if (!r) throw std::runtime_error(r.error().message);
  auto out = std::make_unique<Loaded>(Loaded{std::move(r).value(), {}});
  out->tokenizers.on_missing([l = out.get()](std::string_view m) { l->reports.emplace_back(m); });
  return out;
}

core::ApiCall chat(std::string_view body) {
  return core::classify("POST", "/openai/deployments/d/chat/completions?api-version=2024-10-21",
                        "application/json", body)
      .call;
}

TEST(MissingEncoding, PromptAndOutputAreEstimatedAtFourBytesPerTokenAndReportedOnce) {
  auto l = load(tokenize::EncodingSet{});
  EXPECT_TRUE(l->tokenizers.loaded().empty());
  const std::string body =
      R"({"messages":[{"role":"user","content":"hello world"}],"max_tokens":100})";
  auto call = chat(body);
  auto e = admit(call, body.size(), nullptr, config::PolicyConfig{}, l->tokenizers, "gpt-4o");
  ASSERT_FALSE(e.error);
  EXPECT_EQ(e.prompt, static_cast<std::int64_t>((body.size() + 3) / 4));
  EXPECT_FALSE(e.exact);
  EXPECT_EQ(e.allowance, 100);
  EXPECT_EQ(prompt_tokens(call, body.size(), l->tokenizers, "gpt-4"),
            static_cast<std::int64_t>((body.size() + 3) / 4));
  EXPECT_EQ(count_output(l->tokenizers, "gpt-4o", "hello world"), 3);  // 11 bytes
  ASSERT_EQ(l->reports.size(), 1u);
  EXPECT_NE(l->reports[0].find("o200k_base is not loaded"), std::string::npos) << l->reports[0];
}

TEST(MissingEncoding, OnlyTheEncodingsNotLoadedAreEstimated) {
  tokenize::EncodingSet cl100k;
  cl100k.add(tokenize::EncodingKind::kCl100kBase);
  auto l = load(cl100k);
  const std::string body = R"({"messages":[{"role":"user","content":"hello world"}]})";
  auto call = chat(body);
  auto exact = admit(call, body.size(), nullptr, config::PolicyConfig{}, l->tokenizers, "gpt-4");
  EXPECT_EQ(exact.prompt, 9);  // 3 + (1 role + 2 content) + 3
  EXPECT_EQ(count_output(l->tokenizers, "gpt-35-turbo", "hello world"), 2);
  EXPECT_TRUE(l->reports.empty());
  EXPECT_EQ(count_output(l->tokenizers, "an-unknown-model", "hello world"), 3);  // o200k: missing
  EXPECT_EQ(l->reports.size(), 1u);
}

TEST(MissingEncoding, WithLoadsWhatIsMissingAndSharesWhatIsLoaded) {
  tokenize::EncodingSet cl100k;
  cl100k.add(tokenize::EncodingKind::kCl100kBase);
  auto l = load(cl100k);
  l->tokenizers.set_count_cache(1 << 16);
  auto more = l->tokenizers.with(tokenize::EncodingSet::all());
  ASSERT_TRUE(more) << more.error().message;
  EXPECT_EQ(more->loaded(), tokenize::EncodingSet::all());
  EXPECT_EQ(more->find(tokenize::EncodingKind::kCl100kBase),
            l->tokenizers.find(tokenize::EncodingKind::kCl100kBase));
  EXPECT_EQ(more->count_cache(), l->tokenizers.count_cache());
  EXPECT_EQ(count_output(*more, "gpt-4o", "hello world"), 2);
  EXPECT_EQ(l->tokenizers.loaded(), cl100k) << "the original is unchanged";
  EXPECT_TRUE(l->reports.empty());
}

}  // namespace
}  // namespace tollgate::ratelimit

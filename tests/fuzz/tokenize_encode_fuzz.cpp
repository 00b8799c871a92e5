// libFuzzer target for the tokenizer. For any input: encode never crashes or reads out of
// bounds (ASan/UBSan), count() == encode().size(), and decode(encode(x)) == x for valid UTF-8
// (== the U+FFFD-repaired text otherwise). Differential checks of the fast paths: the ASCII
// pre-tokenizer splits exactly like PCRE2 alone, and merge_large equals the vector-scan merge
// (merge_small below 100 bytes, a literal port of tiktoken's merge above).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "bpe.hpp"
#include "encoding_impl.hpp"
#include "tollgate/tokenize/encoding.hpp"
#include "utf8.hpp"

namespace {

using namespace tollgate::tokenize;

const Tokenizers& tokenizers() {
  static const Tokenizers t = [] {
    auto r = Tokenizers::load();
    if (!r) {
      std::fprintf(stderr, "fuzz_tokenize_encode: %s\n", r.error().message.c_str());
      std::abort();
    }
    return std::move(r).value();
  }();
  return t;
}

// tiktoken's _byte_pair_merge, ported literally (any length; O(n^2)): the reference for pieces
// too long for merge_small.
std::vector<TokenId> reference_merge(const detail::RankTable& t, const unsigned char* p,
                                     std::size_t n) {
  std::vector<std::pair<std::size_t, detail::Rank>> parts;
  for (std::size_t i = 0; i + 1 < n; ++i) parts.emplace_back(i, t.find(p + i, 2));
  parts.emplace_back(n - 1, detail::kNoRank);
  parts.emplace_back(n, detail::kNoRank);
  auto rank_at = [&](std::size_t i) {
    return i + 3 < parts.size() ? t.find(p + parts[i].first, parts[i + 3].first - parts[i].first)
                                : detail::kNoRank;
  };
  for (;;) {
    detail::Rank best = detail::kNoRank;
    std::size_t at = 0;
    for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
      if (parts[i].second < best) {
        best = parts[i].second;
        at = i;
      }
    }
    if (best == detail::kNoRank) break;
    if (at > 0) parts[at - 1].second = rank_at(at - 1);
    parts[at].second = rank_at(at);
    parts.erase(parts.begin() + static_cast<std::ptrdiff_t>(at) + 1);
  }
  std::vector<TokenId> out;
  for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
    out.push_back(t.find(p + parts[i].first, parts[i + 1].first - parts[i].first));
  }
  return out;
}

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_tokenize_encode: check failed: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string expected;
  if (detail::is_valid_utf8(input)) {
    expected.assign(input);
  } else {
    detail::repair_utf8(input, expected);
    check(detail::is_valid_utf8(expected), "repair yields valid UTF-8");
  }
  detail::MergeScratch scratch;
  for (EncodingKind kind : kAllEncodings) {
    const Encoding& enc = tokenizers().get(kind);
    const std::vector<TokenId> ids = enc.encode(input);
    check(enc.count(input) == ids.size(), "count == encode().size()");
    std::string back;
    check(enc.decode(ids, back), "every id decodes");
    check(back == expected, "decode(encode(x)) == x");

    const auto& impl = enc.impl();
    std::vector<std::pair<const unsigned char*, std::size_t>> fast, slow;
    impl.pre.split(expected,
                   [&](const unsigned char* p, std::size_t n) { fast.emplace_back(p, n); });
    impl.pre.split_regex_only(
        expected, [&](const unsigned char* p, std::size_t n) { slow.emplace_back(p, n); });
    check(fast == slow, "fast pre-tokenizer == PCRE2");
    for (const auto& [p, n] : fast) {
      if (n < 2) continue;
      std::vector<TokenId> a, b;
      if (n < detail::kLargePieceBytes) {
        detail::merge_small(impl.table, p, n, [&](detail::Rank r) { a.push_back(r); });
      } else {
        a = reference_merge(impl.table, p, n);
      }
      detail::merge_large(impl.table, p, n, scratch, [&](detail::Rank r) { b.push_back(r); });
      check(a == b, "merge_large == vector-scan merge");
    }
  }
  return 0;
}

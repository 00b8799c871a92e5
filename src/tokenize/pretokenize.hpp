#pragma once
// Pre-tokenization: splits text into the pieces tiktoken's regex would find (module-private).
//
// Two exact paths, see docs/design/tokenizer.md §Pre-tokenization:
//  * PCRE2 (JIT) runs tiktoken's pattern (as shipped in tiktoken@1.0.22) with \s replaced by the
//    explicit Unicode White_Space set, compiled anchored: one call returns the piece at `pos`.
//  * fast_piece() decides the piece at `pos` directly while every character the regex would
//    have to inspect is ASCII, and returns 0 ("ask PCRE2") the moment a non-ASCII byte could
//    matter. The regex has no look-behind, so the piece at `pos` depends only on text[pos..]
//    and mixing both paths is exact. Differential tests and the fuzzer compare both paths.

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "tollgate/tokenize/encoding.hpp"
#include "tollgate/tokenize/result.hpp"

struct pcre2_real_code_8;

namespace tollgate::tokenize::detail {

/// The verbatim pattern tiktoken@1.0.22 uses, with \s / \S spelled out (see the .cpp).
std::string regex_pattern(EncodingKind kind);

/// Number of times a PCRE2 call failed (JIT stack / match limit) and one character was taken
/// as a piece instead. Never expected; tests assert it stays 0.
extern std::atomic<std::uint64_t> g_regex_fallbacks;

namespace ascii {
inline constexpr std::uint8_t kUpper = 1, kLower = 2, kDigit = 4, kSpace = 8, kCrLf = 16,
                              kPunct = 32;
inline constexpr std::uint8_t kLetter = kUpper | kLower;

constexpr std::array<std::uint8_t, 128> make_classes() {
  std::array<std::uint8_t, 128> c{};
  for (int i = 0; i < 128; ++i) {
    std::uint8_t v = kPunct;  // not White_Space, not L, not N: punctuation, symbols, controls
    if (i >= 'A' && i <= 'Z') v = kUpper;
    if (i >= 'a' && i <= 'z') v = kLower;
    if (i >= '0' && i <= '9') v = kDigit;
    if (i == '\t' || i == '\v' || i == '\f' || i == ' ') v = kSpace;
    if (i == '\r' || i == '\n') v = kSpace | kCrLf;
    c[static_cast<std::size_t>(i)] = v;
  }
  return c;
}
inline constexpr std::array<std::uint8_t, 128> kClass = make_classes();
}  // namespace ascii

class PreTokenizer {
 public:
  static Result<PreTokenizer> create(EncodingKind kind);
  PreTokenizer(PreTokenizer&& o) noexcept : kind_(o.kind_), code_(o.code_), jit_(o.jit_) {
    o.code_ = nullptr;
  }
  PreTokenizer& operator=(PreTokenizer&&) = delete;
  PreTokenizer(const PreTokenizer&) = delete;
  ~PreTokenizer();

  /// Length of the piece at `pos` (< n) by PCRE2 alone. `s[0..n)` must be valid UTF-8 and `pos`
  /// a character boundary. Thread-safe (per-thread match data).
  std::size_t regex_piece(const unsigned char* s, std::size_t n, std::size_t pos) const noexcept;

  /// Length of the piece at `pos` (< n) if it is decided by ASCII characters alone, else 0.
  std::size_t fast_piece(const unsigned char* s, std::size_t n, std::size_t pos) const noexcept {
    return kind_ == EncodingKind::kCl100kBase ? fast_cl100k(s, n, pos) : fast_o200k(s, n, pos);
  }

  /// Calls on_piece(ptr, len) for every piece of valid UTF-8 `text`, in order.
  template <class F>
  void split(std::string_view text, F&& on_piece) const {
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    const std::size_t n = text.size();
    std::size_t pos = 0;
    while (pos < n) {
      std::size_t len = fast_piece(s, n, pos);
      if (len == 0) len = regex_piece(s, n, pos);
      on_piece(s + pos, len);
      pos += len;
    }
  }

  /// Same pieces, PCRE2 only (for differential tests and the fuzzer).
  template <class F>
  void split_regex_only(std::string_view text, F&& on_piece) const {
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    const std::size_t n = text.size();
    for (std::size_t pos = 0; pos < n;) {
      const std::size_t len = regex_piece(s, n, pos);
      on_piece(s + pos, len);
      pos += len;
    }
  }

  bool jit() const noexcept { return jit_; }

 private:
  PreTokenizer(EncodingKind kind, pcre2_real_code_8* code, bool jit)
      : kind_(kind), code_(code), jit_(jit) {}

  static std::uint8_t cls(unsigned char c) noexcept { return ascii::kClass[c]; }

  // Whitespace alternatives shared by both patterns: \s*[\r\n]+ | \s+(?!\S) | \s+ at a
  // whitespace character.
  static std::size_t whitespace_run(const unsigned char* s, std::size_t n, std::size_t i) noexcept {
    std::size_t j = i;
    std::size_t last_crlf = n;  // none
    while (j < n && s[j] < 0x80 && (cls(s[j]) & ascii::kSpace)) {
      if (cls(s[j]) & ascii::kCrLf) last_crlf = j;
      ++j;
    }
    if (j < n && s[j] >= 0x80) return 0;  // the run may go on (U+0085, U+00A0, ...)
    if (last_crlf != n) return last_crlf + 1 - i;
    if (j == n) return j - i;
    return j - i >= 2 ? j - i - 1 : 1;
  }

  // 's 't 're 've 'm 'll 'd (case-insensitive) at s[i] == '\''; length, 0 if none, or
  // kUndecided if a non-ASCII byte (e.g. U+017F, which folds to 's') decides it.
  static constexpr std::size_t kUndecided = ~std::size_t{0};
  static std::size_t contraction(const unsigned char* s, std::size_t n, std::size_t i) noexcept {
    if (i + 1 >= n) return 0;
    const unsigned char a = s[i + 1];
    if (a >= 0x80) return kUndecided;
    const unsigned char la = a | 0x20;
    if (!(cls(a) & ascii::kLetter)) return 0;
    if (la == 's' || la == 't' || la == 'm' || la == 'd') return 2;
    if (la != 'r' && la != 'v' && la != 'l') return 0;
    if (i + 2 >= n) return 0;
    const unsigned char b = s[i + 2];
    if (b >= 0x80) return kUndecided;
    const unsigned char lb = b | 0x20;
    if (!(cls(b) & ascii::kLetter)) return 0;
    if ((la == 'r' && lb == 'e') || (la == 'v' && lb == 'e') || (la == 'l' && lb == 'l')) return 3;
    return 0;
  }

  // ` ?[^\s\p{L}\p{N}]+[\r\n]*` (o200k: `[\r\n/]*`) at s[i] (space or punct): length, 0 if
  // undecided, kNoMatch if this alternative does not match.
  static constexpr std::size_t kNoMatch = ~std::size_t{0} - 1;
  static std::size_t punct_run(const unsigned char* s, std::size_t n, std::size_t i,
                               bool slash_tail) noexcept {
    std::size_t k = s[i] == ' ' ? i + 1 : i;
    if (k >= n) return kNoMatch;
    if (s[k] >= 0x80) return 0;
    if (!(cls(s[k]) & ascii::kPunct)) return kNoMatch;
    std::size_t j = k + 1;
    while (j < n && s[j] < 0x80 && (cls(s[j]) & ascii::kPunct)) ++j;
    if (j < n && s[j] >= 0x80) return 0;
    while (j < n && (s[j] == '\r' || s[j] == '\n' || (slash_tail && s[j] == '/'))) ++j;
    return j - i;
  }

  static std::size_t digits(const unsigned char* s, std::size_t n, std::size_t i) noexcept {
    std::size_t j = i + 1;
    while (j < n && j < i + 3 && s[j] < 0x80 && (cls(s[j]) & ascii::kDigit)) ++j;
    if (j < n && j < i + 3 && s[j] >= 0x80) return 0;  // e.g. U+0663 or U+00B2 could follow
    return j - i;
  }

  static std::size_t fast_cl100k(const unsigned char* s, std::size_t n, std::size_t i) noexcept {
    const unsigned char c = s[i];
    if (c >= 0x80) return 0;
    const std::uint8_t k = cls(c);
    if (c == '\'') {
      const std::size_t len = contraction(s, n, i);
      if (len == kUndecided) return 0;
      if (len != 0) return len;
    }
    // [^\r\n\p{L}\p{N}]?\p{L}+
    std::size_t letters = n;
    if (k & ascii::kLetter) {
      letters = i;
    } else if (!(k & (ascii::kCrLf | ascii::kDigit)) && i + 1 < n) {
      if (s[i + 1] >= 0x80) return 0;
      if (cls(s[i + 1]) & ascii::kLetter) letters = i + 1;
    }
    if (letters != n) {
      std::size_t j = letters + 1;
      while (j < n && s[j] < 0x80 && (cls(s[j]) & ascii::kLetter)) ++j;
      if (j < n && s[j] >= 0x80) return 0;
      return j - i;
    }
    if (k & ascii::kDigit) return digits(s, n, i);
    if ((k & ascii::kPunct) || c == ' ') {
      const std::size_t len = punct_run(s, n, i, false);
      if (len != kNoMatch) return len;  // includes 0 = undecided
    }
    return whitespace_run(s, n, i);
  }

  static std::size_t fast_o200k(const unsigned char* s, std::size_t n, std::size_t i) noexcept {
    const unsigned char c = s[i];
    if (c >= 0x80) return 0;
    const std::uint8_t k = cls(c);
    // [^\r\n\p{L}\p{N}]?[upper-ish]*[lower-ish]+(contraction)? | ...?[upper-ish]+[lower-ish]*...
    std::size_t q = n;
    if (k & ascii::kLetter) {
      q = i;
    } else if (!(k & (ascii::kCrLf | ascii::kDigit)) && i + 1 < n) {
      if (s[i + 1] >= 0x80) return 0;
      if (cls(s[i + 1]) & ascii::kLetter) q = i + 1;
    }
    if (q != n) {
      std::size_t u = q;
      while (u < n && s[u] < 0x80 && (cls(s[u]) & ascii::kUpper)) ++u;
      if (u < n && s[u] >= 0x80) return 0;
      std::size_t end = u;
      if (u < n && (cls(s[u]) & ascii::kLower)) {
        end = u + 1;
        while (end < n && s[end] < 0x80 && (cls(s[end]) & ascii::kLower)) ++end;
        if (end < n && s[end] >= 0x80) return 0;
      }
      if (end < n && s[end] == '\'') {
        const std::size_t len = contraction(s, n, end);
        if (len == kUndecided) return 0;
        end += len;
      }
      return end - i;
    }
    if (k & ascii::kDigit) return digits(s, n, i);
    if ((k & ascii::kPunct) || c == ' ') {
      const std::size_t len = punct_run(s, n, i, true);
      if (len != kNoMatch) return len;
    }
    return whitespace_run(s, n, i);
  }

  EncodingKind kind_;
  pcre2_real_code_8* code_;  // owned; immutable after create()
  bool jit_;
};

}  // namespace tollgate::tokenize::detail

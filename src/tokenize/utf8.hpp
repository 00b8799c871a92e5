#pragma once
// UTF-8 validation and WHATWG-style repair (module-private).

#include <cstddef>
#include <string>
#include <string_view>

namespace tollgate::tokenize::detail {

/// True if `s` is well-formed UTF-8 (RFC 3629: no overlongs, no surrogates, <= U+10FFFF), which
/// is exactly what PCRE2 accepts with PCRE2_UTF.
bool is_valid_utf8(std::string_view s) noexcept;

/// Replaces every maximal invalid subsequence by U+FFFD (the WHATWG Encoding Standard's decoder,
/// i.e. what TextDecoder and JSON-from-bytes decoders do) and writes the result to `out`.
void repair_utf8(std::string_view s, std::string& out);

/// True if `s` starts with the lower-case ASCII `prefix`, ignoring ASCII case in `s`
/// (model names: "GPT-4o" matches "gpt-4o").
inline bool starts_with_ci(std::string_view s, std::string_view prefix) noexcept {
  if (s.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    char c = s[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != prefix[i]) return false;
  }
  return true;
}

}  // namespace tollgate::tokenize::detail

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

}  // namespace tollgate::tokenize::detail

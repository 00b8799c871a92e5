#include "utf8.hpp"

#include <cstdint>
#include <cstring>

namespace tollgate::tokenize::detail {
namespace {

// Length of the valid sequence starting at s[i], or 0 if it is invalid there.
std::size_t valid_sequence_length(const unsigned char* s, std::size_t i, std::size_t n) noexcept {
  const unsigned char b = s[i];
  if (b < 0x80) return 1;
  std::size_t need;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b >= 0xC2 && b <= 0xDF) {
    need = 1;
  } else if (b >= 0xE0 && b <= 0xEF) {
    need = 2;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    need = 3;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (n - i <= need) return 0;
  if (s[i + 1] < lo || s[i + 1] > hi) return 0;
  for (std::size_t k = 2; k <= need; ++k) {
    if ((s[i + k] & 0xC0) != 0x80) return 0;
  }
  return need + 1;
}

}  // namespace

bool is_valid_utf8(std::string_view text) noexcept {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  std::size_t i = 0;
  while (i < n) {
    // ASCII fast path, 8 bytes at a time.
    while (i + 8 <= n) {
      std::uint64_t w;
      std::memcpy(&w, s + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    if (s[i] < 0x80) {
      ++i;
      continue;
    }
    const std::size_t len = valid_sequence_length(s, i, n);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

void repair_utf8(std::string_view text, std::string& out) {
  static constexpr char kReplacement[] = "\xEF\xBF\xBD";
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  out.clear();
  out.reserve(n + 16);
  std::size_t i = 0;
  while (i < n) {
    const std::size_t len = valid_sequence_length(s, i, n);
    if (len != 0) {
      out.append(text.data() + i, len);
      i += len;
      continue;
    }
    // Maximal subpart: a lead byte followed by as many bytes as are still valid continuations
    // for it (WHATWG decoder: one U+FFFD per maximal subpart, then the offending byte is
    // reconsidered on its own).
    const unsigned char b = s[i];
    std::size_t consumed = 1;
    std::size_t need = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
      need = 1;
    } else if (b >= 0xE0 && b <= 0xEF) {
      need = 2;
      if (b == 0xE0) lo = 0xA0;
      if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      need = 3;
      if (b == 0xF0) lo = 0x90;
      if (b == 0xF4) hi = 0x8F;
    }
    for (std::size_t k = 1; k <= need && i + k < n; ++k) {
      const unsigned char c = s[i + k];
      if (c < lo || c > hi) break;
      lo = 0x80;
      hi = 0xBF;
      ++consumed;
    }
    out.append(kReplacement, 3);
    i += consumed;
  }
}

}  // namespace tollgate::tokenize::detail

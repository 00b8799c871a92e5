#include "utf8.hpp"

#include <cstdint>
#include <cstring>

namespace tollgate::tokenize::detail {
namespace {

// Length of the valid sequence starting at s[i], or 0 if it is invalid there.
// What a lead byte announces (RFC 3629 table 3-7): how many continuation bytes follow, and the
// allowed range of the first one (narrower after E0, ED, F0, F4). need == 0: not a lead byte.
struct LeadByte {
  std::size_t need;
  unsigned char lo;
  unsigned char hi;
};

LeadByte lead_byte(unsigned char b) noexcept {
  if (b >= 0xC2 && b <= 0xDF) return {1, 0x80, 0xBF};
  if (b >= 0xE0 && b <= 0xEF) {
    return {2, static_cast<unsigned char>(b == 0xE0 ? 0xA0 : 0x80),
            static_cast<unsigned char>(b == 0xED ? 0x9F : 0xBF)};
  }
  if (b >= 0xF0 && b <= 0xF4) {
    return {3, static_cast<unsigned char>(b == 0xF0 ? 0x90 : 0x80),
            static_cast<unsigned char>(b == 0xF4 ? 0x8F : 0xBF)};
  }
  return {0, 0x80, 0xBF};
}

std::size_t valid_sequence_length(const unsigned char* s, std::size_t i, std::size_t n) noexcept {
  const unsigned char b = s[i];
  if (b < 0x80) return 1;
  const LeadByte lead = lead_byte(b);
  const std::size_t need = lead.need;
  const unsigned char lo = lead.lo, hi = lead.hi;
  if (need == 0) return 0;
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
    const LeadByte lead = lead_byte(b);
    const std::size_t need = lead.need;
    unsigned char lo = lead.lo, hi = lead.hi;
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

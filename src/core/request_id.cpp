#include <random>

#include "tollgate/core/request_id.hpp"

namespace tollgate::core {

std::string new_request_id() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::uint64_t a = rng(), b = rng();
  a = (a & 0xFFFFFFFFFFFF0FFFULL) | 0x0000000000004000ULL;  // version 4
  b = (b & 0x3FFFFFFFFFFFFFFFULL) | 0x8000000000000000ULL;  // variant 10
  std::string s(36, '-');
  int pos = 0;
  auto put = [&](std::uint64_t v, int nibbles) {
    for (int i = nibbles - 1; i >= 0; --i) {
      if (s[pos] == '-' && (pos == 8 || pos == 13 || pos == 18 || pos == 23)) ++pos;
      s[pos++] = kHex[(v >> (i * 4)) & 0xF];
    }
  };
  put(a, 16);
  put(b, 16);
  return s;
}

bool acceptable_request_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    if (c < 0x21 || c > 0x7E || c == '"' || c == '\\') return false;
  }
  return true;
}

}  // namespace tollgate::core

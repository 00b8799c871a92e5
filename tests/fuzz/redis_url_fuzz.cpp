// parse_redis_url on arbitrary input: never crashes, errors carry a message, and a parsed address
// rendered with to_url() parses back to the same address, and display_url() to it without the
// password.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "tollgate/config/redis_url.hpp"

using tollgate::config::parse_redis_url;
using tollgate::config::RedisAddress;
using tollgate::config::RedisUrlError;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  auto parsed = parse_redis_url(input);
  if (auto* e = std::get_if<RedisUrlError>(&parsed)) {
    if (e->message.empty()) std::abort();
    return 0;
  }
  const auto& a = std::get<RedisAddress>(parsed);
  if (a.host.empty() || a.port == 0) std::abort();
  auto again = parse_redis_url(tollgate::config::to_url(a));
  auto* b = std::get_if<RedisAddress>(&again);
  if (b == nullptr || !(*b == a)) std::abort();
  // The URL for logs is the same address without its password.
  auto shown = parse_redis_url(tollgate::config::display_url(a));
  auto* c = std::get_if<RedisAddress>(&shown);
  auto expected = a;
  expected.password.clear();
  if (c == nullptr || !(*c == expected)) std::abort();
  return 0;
}

// parse_redis_url on arbitrary input: never crashes, errors carry a message, and a parsed address
// rendered with to_url() parses back to the same address.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "cluster/redis_url.hpp"

using tollgate::cluster::parse_redis_url;
using tollgate::cluster::RedisAddress;
using tollgate::cluster::RedisUrlError;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  auto parsed = parse_redis_url(input);
  if (auto* e = std::get_if<RedisUrlError>(&parsed)) {
    if (e->message.empty()) std::abort();
    return 0;
  }
  const auto& a = std::get<RedisAddress>(parsed);
  if (a.host.empty() || a.port == 0 || (!a.user.empty() && a.password.empty())) std::abort();
  auto again = parse_redis_url(tollgate::cluster::to_url(a));
  auto* b = std::get_if<RedisAddress>(&again);
  if (b == nullptr || !(*b == a)) std::abort();
  return 0;
}

#pragma once
// Where a Redis server is and how to reach it, from a redis:// or rediss:// URL.
// Thread: any. No state.

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

namespace tollgate::config {

inline constexpr std::uint16_t kRedisDefaultPort = 6379;

/// A Redis server's address and credentials. `host` is a DNS name or an IP literal (IPv6
/// without brackets). An empty `user` with a password means AUTH <password> (the default user);
/// a user needs a password (the config's check: it may come from cluster.redis.password).
struct RedisAddress {
  std::string host;
  std::uint16_t port = kRedisDefaultPort;
  std::uint32_t db = 0;
  std::string user;
  std::string password;
  bool tls = false;  // rediss://

  bool operator==(const RedisAddress&) const = default;
};

/// Why a URL is not a Redis address, for a config error ("redis url: <message>").
struct RedisUrlError {
  std::string message;
};

/// Parses `redis://[user[:password]@]host[:port][/db]` or `rediss://...` (user and password
/// percent-decoded). Errors name the part that is wrong: scheme, host, port, db, or a query or
/// fragment (not supported).
std::variant<RedisAddress, RedisUrlError> parse_redis_url(std::string_view url);

/// The URL of `a` (user and password percent-encoded): parse_redis_url() gives back any address
/// it returned.
/// Contains the password: never log it.
std::string to_url(const RedisAddress& a);

/// The URL of `a` without its password, for logs and messages.
std::string display_url(const RedisAddress& a);

}  // namespace tollgate::config

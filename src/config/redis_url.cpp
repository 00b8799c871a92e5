#include "tollgate/config/redis_url.hpp"

#include <boost/url/ipv4_address.hpp>
#include <boost/url/ipv6_address.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url.hpp>
#include <limits>
#include <optional>

namespace tollgate::config {
namespace {

namespace urls = boost::urls;

// Digits only (no sign, no spaces), within [min, max].
template <class Int>
bool parse_number(std::string_view s, Int min, Int max, Int& out) {
  if (s.empty() || s.size() > 10) return false;
  std::uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  if (v < static_cast<std::uint64_t>(min) || v > static_cast<std::uint64_t>(max)) return false;
  out = static_cast<Int>(v);
  return true;
}

std::variant<bool, RedisUrlError> parse_scheme(const urls::url_view& u) {
  if (u.scheme() == "redis") return false;
  if (u.scheme() == "rediss") return true;
  return RedisUrlError{"scheme must be redis:// or rediss:// (got \"" + std::string(u.scheme()) +
                       "\")"};
}

std::optional<RedisUrlError> parse_authority(const urls::url_view& u, RedisAddress& a) {
  if (!u.has_authority()) return RedisUrlError{"no host (expected redis://host[:port][/db])"};
  switch (u.host_type()) {
    case urls::host_type::ipv4:  // canonical text, as to_url() writes it
      a.host = u.host_ipv4_address().to_string();
      break;
    case urls::host_type::ipv6:
      a.host = u.host_ipv6_address().to_string();
      break;
    case urls::host_type::name:
      if (u.encoded_host().find('%') != urls::string_view::npos) {
        return RedisUrlError{"host must be a DNS name or an IP address (no %-escapes)"};
      }
      a.host = u.encoded_host();
      break;
    default:
      return RedisUrlError{"host must be a DNS name or an IP address"};
  }
  if (a.host.empty()) return RedisUrlError{"empty host"};
  if (u.has_port() && !parse_number<std::uint16_t>(
                          u.port(), 1, std::numeric_limits<std::uint16_t>::max(), a.port)) {
    return RedisUrlError{"port must be a number from 1 to 65535 (got \"" + std::string(u.port()) +
                         "\")"};
  }
  if (u.has_userinfo()) {
    a.user = u.user();
    if (u.has_password()) a.password = u.password();
  }
  return std::nullopt;
}

std::optional<RedisUrlError> parse_db(const urls::url_view& u, RedisAddress& a) {
  std::string path = u.path();
  if (path.empty() || path == "/") return std::nullopt;
  std::string_view digits = std::string_view(path).substr(1);
  constexpr auto kMaxDb = static_cast<std::uint32_t>(std::numeric_limits<std::int32_t>::max());
  if (path.front() != '/' || !parse_number<std::uint32_t>(digits, 0, kMaxDb, a.db)) {
    return RedisUrlError{"db must be a number after the host, as in /0 (got \"" + path + "\")"};
  }
  return std::nullopt;
}

}  // namespace

std::variant<RedisAddress, RedisUrlError> parse_redis_url(std::string_view url) {
  auto parsed = urls::parse_uri(url);
  if (!parsed) {
    return RedisUrlError{"not a URL (expected redis://[user[:password]@]host[:port][/db])"};
  }
  const urls::url_view& u = *parsed;
  RedisAddress a;
  auto tls = parse_scheme(u);
  if (auto* e = std::get_if<RedisUrlError>(&tls)) return *e;
  a.tls = std::get<bool>(tls);
  if (u.has_query()) return RedisUrlError{"a query (?...) is not supported"};
  if (u.has_fragment()) return RedisUrlError{"a fragment (#...) is not supported"};
  if (auto e = parse_authority(u, a)) return *e;
  if (auto e = parse_db(u, a)) return *e;
  return a;
}

std::string to_url(const RedisAddress& a) {
  urls::url u;
  u.set_scheme(a.tls ? "rediss" : "redis");
  if (auto v4 = urls::parse_ipv4_address(a.host)) {
    u.set_host_ipv4(*v4);
  } else if (auto v6 = urls::parse_ipv6_address(a.host)) {
    u.set_host_ipv6(*v6);
  } else {
    u.set_host_name(a.host);  // never an IPvFuture literal, unlike set_host_address()
  }
  if (!a.user.empty()) u.set_user(a.user);
  if (!a.password.empty()) {
    u.set_user(a.user);
    u.set_password(a.password);
  }
  u.set_port_number(a.port);
  u.set_path("/" + std::to_string(a.db));
  return std::string(u.buffer());
}

std::string display_url(const RedisAddress& a) {
  auto copy = a;
  copy.password.clear();
  return to_url(copy);
}

}  // namespace tollgate::config

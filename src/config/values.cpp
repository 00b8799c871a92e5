// The value kinds of the config schema and the walk's error collection.

#include "config/values.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <boost/url/parse.hpp>
#include <boost/url/url.hpp>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

namespace tollgate::config::schema {
namespace {

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string closest(std::string_view key, const std::vector<std::string_view>& allowed) {
  std::string hint;
  std::size_t best = 3;  // suggest only near misses
  for (auto candidate : allowed) {
    auto d = edit_distance(key, candidate);
    if (d < best) {
      best = d;
      hint = std::string(candidate);
    }
  }
  return hint;
}

bool is_ip_literal(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

std::string lowered(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), ::tolower);
  return s;
}

std::string got(std::string_view text) {
  return " (got \"" + std::string(text) + "\")";
}

/// Splits "host:port" / "[v6]:port"; nullopt with the message in `error` when malformed.
std::optional<std::pair<std::string, std::string>> split_address(const std::string& v,
                                                                 std::string& error) {
  if (!v.empty() && v[0] == '[') {
    auto close = v.find(']');
    if (close == std::string::npos || close + 1 >= v.size() || v[close + 1] != ':') {
      error = "must be host:port or [ipv6]:port" + got(v);
      return std::nullopt;
    }
    return std::make_pair(v.substr(1, close - 1), v.substr(close + 2));
  }
  auto colon = v.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    error = "must be host:port" + got(v);
    return std::nullopt;
  }
  return std::make_pair(v.substr(0, colon), v.substr(colon + 1));
}

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

// ---- Ctx ------------------------------------------------------------------------------------

void Ctx::error(const Node& at, const std::string& path, const std::string& message) {
  error(at.Mark(), path, message);
}

void Ctx::error(const YAML::Mark& m, const std::string& path, const std::string& message) {
  std::ostringstream out;
  out << source_ << ':';
  if (m.is_null()) {
    out << "1:1";
  } else {
    out << m.line + 1 << ':' << m.column + 1;
  }
  out << ": " << (path.empty() ? "(root)" : path) << ": " << message;
  errors_.push_back(out.str());
}

std::optional<std::string> Ctx::scalar(const Node& node, const std::string& path) {
  if (!node.IsScalar()) {
    error(node, path, "must be a scalar value");
    return std::nullopt;
  }
  return node.Scalar();
}

bool Ctx::expect_map(const Node& node, const std::string& path,
                     const std::vector<std::string_view>& allowed) {
  if (!node.IsMap()) {
    error(node, path, "must be a mapping");
    return false;
  }
  std::vector<std::string> seen;
  for (const auto& kv : node) {
    auto key = kv.first.as<std::string>("");
    // YAML says keys are unique; yaml-cpp keeps both and reads the first: refuse, as a typo
    // that silently loses a setting is worse than an error.
    if (std::find(seen.begin(), seen.end(), key) != seen.end()) {
      error(kv.first, path, "duplicate key \"" + key + "\"");
      continue;
    }
    seen.push_back(key);
    if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
    std::string msg = "unknown key \"" + key + "\"";
    if (auto hint = closest(key, allowed); !hint.empty())
      msg += " (did you mean \"" + hint + "\"?)";
    error(kv.first, path, msg);
  }
  return true;
}

std::optional<std::string> Ctx::claim(const std::string& space, const std::string& key,
                                      const std::string& owner) {
  auto [it, fresh] = claims_.emplace(std::make_pair(space, key), owner);
  if (fresh) return std::nullopt;
  return it->second;
}

Ctx& docs_ctx() {
  static const EnvLookup no_env = [](const std::string&) -> std::optional<std::string> {
    return std::nullopt;
  };
  static Config config;
  static Ctx ctx("docs", no_env, &config);
  return ctx;
}

// ---- Scalars --------------------------------------------------------------------------------

Read<Millis> Duration::read(std::string_view text, Ctx&) const {
  auto d = parse_duration(text);
  if (!d || d->count() <= 0)
    return Fail{"must be a positive duration like 250ms, 10s, 5m" + got(text)};
  return *d;
}

Read<Millis> Wait::read(std::string_view text, Ctx&) const {
  auto d = text == "0" ? std::optional<Millis>(0) : parse_duration(text);
  if (!d || d->count() < 0 || *d > max) return Fail{"must be " + std::string(expect) + got(text)};
  return *d;
}

Read<std::size_t> Size::read(std::string_view text, Ctx&) const {
  auto s = text == "0" ? std::optional<std::size_t>(0) : parse_size(text);
  if (!s || (*s == 0 && !zero_allowed)) return Fail{"must be a positive size like 512KiB, 8MiB" + got(text)};
  return *s;
}

Read<std::uint64_t> UInt::read(std::string_view text, Ctx&) const {
  std::uint64_t n = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc{} || ptr != text.data() + text.size()) {
    return Fail{"must be a whole number" + got(text)};
  }
  if (n < min || n > max) {
    return Fail{"must be between " + std::to_string(min) + " and " + std::to_string(max) +
                " (got " + std::string(text) + ")"};
  }
  return n;
}

Read<double> Number::read(std::string_view text, Ctx&) const {
  double d = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), d);
  if (ec != std::errc{} || ptr != text.data() + text.size() || !(d >= min && d <= max)) {
    return Fail{"must be " + std::string(what) + got(text)};
  }
  return d;
}

std::string Number::canonical(const double& v) const {
  std::array<char, 32> buf{};
  auto [ptr, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), v);
  return ec == std::errc{} ? std::string(buf.data(), ptr) : std::string{};
}

Read<bool> Bool::read(std::string_view text, Ctx&) const {
  if (text == "true") return true;
  if (text == "false") return false;
  return Fail{"must be true or false"};
}

Read<std::string> Text::read(std::string_view text, Ctx&) const {
  if (non_empty && text.empty()) return Fail{"must not be empty"};
  return lower ? lowered(std::string(text)) : std::string(text);
}

Read<std::string> AbsPath::read(std::string_view text, Ctx&) const {
  if (text.empty() || text.front() != '/') return Fail{"must start with /"};
  return std::string(text);
}

Read<std::string> PathInExistingDir::read(std::string_view text, Ctx&) const {
  if (text.empty()) return std::string();
  auto dir = std::filesystem::path(text).parent_path();
  std::error_code ec;
  if (!dir.empty() && !std::filesystem::is_directory(dir, ec)) {
    return Fail{"directory " + dir.string() + " does not exist"};
  }
  return std::string(text);
}

Read<std::string> Name::read(std::string_view text, Ctx& ctx) const {
  std::string name(text);
  if (name.empty()) return Fail{"must not be empty"};
  if (std::find(reserved.begin(), reserved.end(), text) != reserved.end()) {
    return Fail{"\"" + name + "\" is reserved"};
  }
  if (ctx.claim(what, name, name)) return Fail{"duplicate " + what + " \"" + name + "\""};
  return name;
}

Read<std::string> Secret::read(std::string_view text, Ctx& ctx) const {
  std::string v(text);
  if (v.rfind("env:", 0) == 0) {
    auto name = v.substr(4);
    if (name.empty()) return Fail{"env: reference needs a variable name"};
    auto value = ctx.env(name);
    if (!value || value->empty())
      return Fail{"environment variable " + name + " is not set or empty"};
    return *value;
  }
  if (v.rfind("file:", 0) == 0) {
    auto file = v.substr(5);
    auto value = read_file(file);
    if (!value) return Fail{"cannot read secret file " + file};
    while (!value->empty() && (value->back() == '\n' || value->back() == '\r')) value->pop_back();
    if (value->empty()) return Fail{"secret file " + file + " is empty"};
    return *value;
  }
  return Fail{
      "secrets must be a reference, env:NAME or file:/path (literal secrets are not allowed in "
      "the config file)"};
}

Read<std::string> FileRef::read(std::string_view text, Ctx&) const {
  std::string file(text.rfind("file:", 0) == 0 ? text.substr(5) : text);
  if (file.empty()) return Fail{"must name a file (file:/path)"};
  if (!std::ifstream(file)) return Fail{"cannot read file " + file};
  return file;
}

Read<Address::Value> Address::read(std::string_view text, Ctx&) const {
  std::string v(text);
  std::string error;
  auto parts = split_address(v, error);
  if (!parts) return Fail{error};
  const auto& [host, port_text] = *parts;
  unsigned port = 0;
  auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc{} || ptr != port_text.data() + port_text.size() || port > 65535) {
    return Fail{"port must be a number from 0 to 65535" + got(port_text)};
  }
  if (!is_ip_literal(host) && host != "localhost") {
    return Fail{"must be an IP address to listen on, like 127.0.0.1 or 0.0.0.0" + got(host)};
  }
  return Value{host, static_cast<std::uint16_t>(port), v};
}

Read<RedisAddress> RedisUrl::read(std::string_view text, Ctx& ctx) const {
  bool reference = text.rfind("env:", 0) == 0 || text.rfind("file:", 0) == 0;
  std::string url(text);
  if (reference) {
    auto secret = Secret{}.read(text, ctx);
    if (!secret.ok()) return Fail{secret.error()};
    url = *secret;
  }
  auto parsed = parse_redis_url(url);
  if (auto* e = std::get_if<RedisUrlError>(&parsed)) {
    return Fail{reference ? "the URL from " + std::string(text) + ": " + e->message : e->message};
  }
  auto a = std::get<RedisAddress>(std::move(parsed));
  if (!reference && !a.password.empty()) {
    return Fail{"must not carry a password (literal secrets are not allowed in the config file): "
                "set cluster.redis.password to env:NAME or file:/path, or give the whole URL as a "
                "reference"};
  }
  return a;
}

Read<PostgresUrl::Value> PostgresUrl::read(std::string_view text, Ctx& ctx) const {
  bool reference = text.rfind("env:", 0) == 0 || text.rfind("file:", 0) == 0;
  std::string url(text);
  if (reference) {
    auto secret = Secret{}.read(text, ctx);
    if (!secret.ok()) return Fail{secret.error()};
    url = *secret;
  }
  auto from = [&](const std::string& m) {
    return Fail{reference ? "the URL from " + std::string(text) + ": " + m : m};
  };
  auto parsed = boost::urls::parse_uri(url);
  if (!parsed) return from("must be a postgresql:// URL (postgresql://user@host:5432/db?sslmode=require)");
  auto scheme = lowered(std::string(parsed->scheme()));
  if (scheme != "postgresql" && scheme != "postgres") {
    return from("must be a postgresql:// URL (got scheme \"" + scheme + "\")");
  }
  if (parsed->has_fragment()) return from("must not have a fragment");
  if (parsed->has_port() && parsed->port_number() == 0) return from("port must be from 1 to 65535");
  if (parsed->has_password() && !reference) {
    return Fail{"must not carry a password (literal secrets are not allowed in the config file): "
                "give the whole URL as env:NAME or file:/path"};
  }
  boost::urls::url shown(*parsed);
  if (shown.has_password()) shown.set_password("REDACTED");
  return PostgresUrl::Value{url, std::string(shown.buffer())};
}

Read<std::string> SqlTableName::read(std::string_view text, Ctx&) const {
  auto part_ok = [](std::string_view p) {
    if (p.empty() || p.size() > 50 || (p[0] >= '0' && p[0] <= '9')) return false;
    return std::all_of(p.begin(), p.end(), [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    });
  };
  auto dot = text.find('.');
  bool ok = dot == std::string_view::npos
                ? part_ok(text)
                : part_ok(text.substr(0, dot)) && part_ok(text.substr(dot + 1));
  if (!ok) {
    return Fail{"must be a lower-case SQL name of letters, digits and '_' (at most 50), optionally "
                "schema.table" + got(text)};
  }
  return std::string(text);
}

Read<Endpoint> EndpointUrl::read(std::string_view text, Ctx&) const {
  auto parsed = boost::urls::parse_absolute_uri(text);
  const std::string bad_scheme = "must be an http:// or https:// URL" + got(text);
  if (!parsed) return Fail{bad_scheme};
  const auto& u = *parsed;
  Endpoint e;
  e.text = std::string(text);
  e.scheme = lowered(std::string(u.scheme()));
  if (e.scheme != "http" && e.scheme != "https") return Fail{bad_scheme};
  if (u.has_userinfo() || u.has_query() || u.has_fragment()) {
    return Fail{"must not contain user info, a query or a fragment"};
  }
  e.tls = e.scheme == "https";
  e.host = std::string(u.encoded_host_address());
  if (!e.host.empty() && e.host.front() == '[') e.host = e.host.substr(1, e.host.size() - 2);
  if (e.host.empty()) return Fail{"must name a host"};
  std::uint16_t default_port = e.tls ? 443 : 80;
  e.port = u.has_port() ? u.port_number() : default_port;
  if (u.has_port() && e.port == 0) return Fail{"port must be from 1 to 65535"};
  e.base_path = std::string(u.encoded_path());
  while (!e.base_path.empty() && e.base_path.back() == '/') e.base_path.pop_back();
  std::string host_for_header = e.host.find(':') != std::string::npos ? "[" + e.host + "]" : e.host;
  e.host_header =
      e.port == default_port ? host_for_header : host_for_header + ":" + std::to_string(e.port);
  return e;
}

bool secure_url(const std::string& text, std::string_view also_plain) {
  auto url = boost::urls::parse_absolute_uri(text);
  if (!url) return false;
  if (url->scheme() == "https") return true;
  if (url->scheme() != "http") return false;
  std::string host(url->encoded_host_address());
  return host == "127.0.0.1" || host == "localhost" || host == "[::1]" ||
         (!also_plain.empty() && host == also_plain);
}

// ---- Lists ----------------------------------------------------------------------------------

std::optional<StringList::Value> StringList::read(const Node& node, const std::string& path,
                                                  Ctx& ctx) const {
  if (allow_empty && node.IsSequence() && node.size() == 0) return Value{};
  if (!node.IsSequence() || node.size() == 0) {
    ctx.error(node, path, "must be a non-empty list of strings");
    return Value{};
  }
  Value out;
  for (std::size_t i = 0; i < node.size(); ++i) {
    auto v = ctx.scalar(node[i], index(path, i));
    if (v && !v->empty()) out.push_back(lower ? lowered(*v) : *v);
  }
  return out;
}

std::string StringList::canonical(const Value& v) const {
  std::string out = "[";
  for (std::size_t i = 0; i < v.size(); ++i) out += (i == 0 ? "" : ", ") + v[i];
  return out + "]";
}

std::optional<WordList::Value> WordList::read(const Node& node, const std::string& path,
                                              Ctx& ctx) const {
  auto list = StringList{}.read(node, path, ctx);
  for (std::size_t k = 0; k < list->size(); ++k) {
    const auto& w = (*list)[k];
    if (std::find(words.begin(), words.end(), w) == words.end()) {
      ctx.error(node[k], index(path, k),
                "unknown " + std::string(what) + " \"" + w + "\" (" + std::string(expect) + ")");
    }
  }
  return list;
}

// ---- References -----------------------------------------------------------------------------

Read<std::size_t> ClassRef::read(std::string_view text, Ctx& ctx) const {
  if (auto idx = ctx.config().priority.find(text)) return *idx;
  return Fail{"unknown priority class \"" + std::string(text) + "\""};
}

std::optional<ClassList::Value> ClassList::read(const Node& node, const std::string& path,
                                                Ctx& ctx) const {
  Value out;
  auto names = StringList{}.read(node, path, ctx);
  for (std::size_t i = 0; i < names->size(); ++i) {
    auto r = ClassRef{}.read((*names)[i], ctx);
    if (r.ok()) {
      out.push_back(*r);
    } else {
      ctx.error(node[i], index(path, i), r.error());
    }
  }
  return out;
}

Read<std::size_t> DeploymentRef::read(std::string_view text, Ctx& ctx) const {
  const auto& by_name = ctx.config().deployment_by_name;
  if (auto it = by_name.find(std::string(text)); it != by_name.end()) return it->second;
  return Fail{"unknown deployment \"" + std::string(text) + "\""};
}

std::optional<DeploymentList::Value> DeploymentList::read(const Node& node, const std::string& path,
                                                          Ctx& ctx) const {
  auto names = StringList{}.read(node, path, ctx);
  for (std::size_t k = 0; k < names->size(); ++k) {
    const auto& d = (*names)[k];
    if (d == "*") continue;
    if (auto r = DeploymentRef{}.read(d, ctx); !r.ok())
      ctx.error(node[k], index(path, k), r.error());
  }
  return names;
}

Read<std::size_t> TenantRef::read(std::string_view text, Ctx& ctx) const {
  const auto& tenants = ctx.config().tenants;
  for (std::size_t t = 0; t < tenants.size(); ++t) {
    if (tenants[t].name == text) return t;
  }
  return Fail{"unknown tenant \"" + std::string(text) + "\""};
}

}  // namespace tollgate::config::schema

// The only yaml-cpp user. Walks the document once, collecting every error with its position
// ("file:line:col: key.path: message") instead of stopping at the first one.

#include <arpa/inet.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <boost/url/parse.hpp>
#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "tollgate/auth/crypto.hpp"
#include "tollgate/config/config.hpp"

namespace tollgate::config {
namespace {

bool is_ip_literal(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// https://, or http:// to a loopback address (tests, local sidecars) or to `also_plain`.
bool secure_url(const std::string& text, std::string_view also_plain = {}) {
  auto url = boost::urls::parse_absolute_uri(text);
  if (!url) return false;
  if (url->scheme() == "https") return true;
  if (url->scheme() != "http") return false;
  std::string host(url->encoded_host_address());
  return host == "127.0.0.1" || host == "localhost" || host == "[::1]" ||
         (!also_plain.empty() && host == also_plain);
}

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

class Loader {
 public:
  Loader(std::string source, const EnvLookup& env) : source_(std::move(source)), env_(env) {}

  void error(const YAML::Node& at, const std::string& path, const std::string& message) {
    error(at.Mark(), path, message);
  }
  void error(const YAML::Mark& m, const std::string& path, const std::string& message) {
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

  std::vector<std::string>& errors() { return errors_; }

  /// Rejects keys of `node` not in `allowed`, suggesting the closest known key.
  bool expect_map(const YAML::Node& node, const std::string& path,
                  std::initializer_list<std::string_view> allowed) {
    if (!node.IsMap()) {
      error(node, path, "must be a mapping");
      return false;
    }
    for (const auto& kv : node) {
      auto key = kv.first.as<std::string>("");
      if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
      std::string hint;
      std::size_t best = 3;
      for (auto candidate : allowed) {
        auto d = edit_distance(key, candidate);
        if (d < best) {
          best = d;
          hint = std::string(candidate);
        }
      }
      std::string msg = "unknown key \"" + key + "\"";
      if (!hint.empty()) msg += " (did you mean \"" + hint + "\"?)";
      error(kv.first, path, msg);
    }
    return true;
  }

  std::optional<std::string> scalar(const YAML::Node& node, const std::string& path) {
    if (!node.IsScalar()) {
      error(node, path, "must be a scalar value");
      return std::nullopt;
    }
    return node.Scalar();
  }

  void get_string(const YAML::Node& parent, std::string_view key, const std::string& path,
                  std::string& out, bool required = false) {
    auto node = parent[std::string(key)];
    if (!node) {
      if (required) error(parent, path, "missing required key \"" + std::string(key) + "\"");
      return;
    }
    if (auto v = scalar(node, path + "." + std::string(key))) {
      if (v->empty() && required) {
        error(node, path + "." + std::string(key), "must not be empty");
        return;
      }
      out = *v;
    }
  }

  template <typename Int>
  void get_uint(const YAML::Node& parent, std::string_view key, const std::string& path, Int& out,
                std::uint64_t min, std::uint64_t max) {
    auto node = parent[std::string(key)];
    if (!node) return;
    auto p = path + "." + std::string(key);
    auto v = scalar(node, p);
    if (!v) return;
    std::uint64_t n = 0;
    auto [ptr, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
    if (ec != std::errc{} || ptr != v->data() + v->size()) {
      error(node, p, "must be a whole number (got \"" + *v + "\")");
      return;
    }
    if (n < min || n > max) {
      error(node, p, "must be between " + std::to_string(min) + " and " + std::to_string(max) +
                         " (got " + *v + ")");
      return;
    }
    out = static_cast<Int>(n);
  }

  void get_bool(const YAML::Node& parent, std::string_view key, const std::string& path, bool& out) {
    auto node = parent[std::string(key)];
    if (!node) return;
    auto p = path + "." + std::string(key);
    if (auto v = scalar(node, p)) {
      if (*v == "true") {
        out = true;
      } else if (*v == "false") {
        out = false;
      } else {
        error(node, p, "must be true or false");
      }
    }
  }

  void get_number(const YAML::Node& parent, std::string_view key, const std::string& path,
                  double& out, double min, double max, std::string_view what) {
    auto node = parent[std::string(key)];
    if (!node) return;
    auto p = path + "." + std::string(key);
    auto v = scalar(node, p);
    if (!v) return;
    double d = 0;
    auto [ptr, ec] = std::from_chars(v->data(), v->data() + v->size(), d);
    if (ec != std::errc{} || ptr != v->data() + v->size() || !(d >= min && d <= max)) {
      error(node, p, "must be " + std::string(what) + " (got \"" + *v + "\")");
      return;
    }
    out = d;
  }

  void get_fraction(const YAML::Node& parent, std::string_view key, const std::string& path,
                    double& out) {
    get_number(parent, key, path, out, 0, 1, "a number from 0 to 1");
  }

  std::vector<std::string> string_list(const YAML::Node& node, const std::string& path) {
    std::vector<std::string> out;
    if (!node.IsSequence() || node.size() == 0) {
      error(node, path, "must be a non-empty list of strings");
      return out;
    }
    for (std::size_t i = 0; i < node.size(); ++i) {
      auto v = scalar(node[i], path + "[" + std::to_string(i) + "]");
      if (v && !v->empty()) out.push_back(*v);
    }
    return out;
  }

  void get_retry(const YAML::Node& n, const std::string& path, RetryConfig& r) {
    if (!expect_map(n, path, {"max_attempts", "deadline", "budget", "min_retries"})) return;
    get_uint(n, "max_attempts", path, r.max_attempts, 1, 10);
    get_duration(n, "deadline", path, r.deadline);
    get_fraction(n, "budget", path, r.budget);
    get_uint(n, "min_retries", path, r.min_retries, 0, 100000);
  }

  void get_duration(const YAML::Node& parent, std::string_view key, const std::string& path,
                    Millis& out) {
    auto node = parent[std::string(key)];
    if (!node) return;
    auto p = path + "." + std::string(key);
    auto v = scalar(node, p);
    if (!v) return;
    auto d = parse_duration(*v);
    if (!d || d->count() <= 0) {
      error(node, p, "must be a positive duration like 250ms, 10s, 5m (got \"" + *v + "\")");
      return;
    }
    out = *d;
  }

  void get_size(const YAML::Node& parent, std::string_view key, const std::string& path,
                std::size_t& out) {
    auto node = parent[std::string(key)];
    if (!node) return;
    auto p = path + "." + std::string(key);
    auto v = scalar(node, p);
    if (!v) return;
    auto s = parse_size(*v);
    if (!s || *s == 0) {
      error(node, p, "must be a positive size like 512KiB, 8MiB (got \"" + *v + "\")");
      return;
    }
    out = *s;
  }

  /// `env:NAME` or `file:/path`; the value itself never appears in messages.
  std::optional<std::string> secret(const YAML::Node& node, const std::string& path) {
    auto v = scalar(node, path);
    if (!v) return std::nullopt;
    if (v->rfind("env:", 0) == 0) {
      auto name = v->substr(4);
      if (name.empty()) {
        error(node, path, "env: reference needs a variable name");
        return std::nullopt;
      }
      auto value = env_(name);
      if (!value || value->empty()) {
        error(node, path, "environment variable " + name + " is not set or empty");
        return std::nullopt;
      }
      return value;
    }
    if (v->rfind("file:", 0) == 0) {
      auto file = v->substr(5);
      std::ifstream in(file, std::ios::binary);
      if (!in) {
        error(node, path, "cannot read secret file " + file);
        return std::nullopt;
      }
      std::string value((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      while (!value.empty() && (value.back() == '\n' || value.back() == '\r')) value.pop_back();
      if (value.empty()) {
        error(node, path, "secret file " + file + " is empty");
        return std::nullopt;
      }
      return value;
    }
    error(node, path,
          "secrets must be a reference, env:NAME or file:/path (literal secrets are not "
          "allowed in the config file)");
    return std::nullopt;
  }

  /// `file:/path` (or a bare path) to a file that must exist and be readable.
  std::optional<std::string> file_ref(const YAML::Node& node, const std::string& path) {
    auto v = scalar(node, path);
    if (!v) return std::nullopt;
    std::string file = v->rfind("file:", 0) == 0 ? v->substr(5) : *v;
    if (file.empty()) {
      error(node, path, "must name a file (file:/path)");
      return std::nullopt;
    }
    std::ifstream in(file);
    if (!in) {
      error(node, path, "cannot read file " + file);
      return std::nullopt;
    }
    return file;
  }

  std::optional<std::pair<std::string, std::uint16_t>> address(const YAML::Node& node,
                                                              const std::string& path) {
    auto v = scalar(node, path);
    if (!v) return std::nullopt;
    std::string host;
    std::string port_text;
    if (!v->empty() && (*v)[0] == '[') {
      auto close = v->find(']');
      if (close == std::string::npos || close + 1 >= v->size() || (*v)[close + 1] != ':') {
        error(node, path, "must be host:port or [ipv6]:port (got \"" + *v + "\")");
        return std::nullopt;
      }
      host = v->substr(1, close - 1);
      port_text = v->substr(close + 2);
    } else {
      auto colon = v->rfind(':');
      if (colon == std::string::npos || colon == 0) {
        error(node, path, "must be host:port (got \"" + *v + "\")");
        return std::nullopt;
      }
      host = v->substr(0, colon);
      port_text = v->substr(colon + 1);
    }
    unsigned port = 0;
    auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (ec != std::errc{} || ptr != port_text.data() + port_text.size() || port > 65535) {
      error(node, path, "port must be a number from 0 to 65535 (got \"" + port_text + "\")");
      return std::nullopt;
    }
    if (!is_ip_literal(host) && host != "localhost") {
      error(node, path, "must be an IP address to listen on, like 127.0.0.1 or 0.0.0.0 (got \"" +
                            host + "\")");
      return std::nullopt;
    }
    return std::make_pair(host, static_cast<std::uint16_t>(port));
  }

  std::optional<Endpoint> endpoint(const YAML::Node& node, const std::string& path) {
    auto v = scalar(node, path);
    if (!v) return std::nullopt;
    auto parsed = boost::urls::parse_absolute_uri(*v);
    if (!parsed) {
      error(node, path, "must be an http:// or https:// URL (got \"" + *v + "\")");
      return std::nullopt;
    }
    const auto& u = *parsed;
    Endpoint e;
    e.text = *v;
    e.scheme = std::string(u.scheme());
    std::transform(e.scheme.begin(), e.scheme.end(), e.scheme.begin(), ::tolower);
    if (e.scheme != "http" && e.scheme != "https") {
      error(node, path, "must be an http:// or https:// URL (got \"" + *v + "\")");
      return std::nullopt;
    }
    if (u.has_userinfo() || u.has_query() || u.has_fragment()) {
      error(node, path, "must not contain user info, a query or a fragment");
      return std::nullopt;
    }
    e.tls = e.scheme == "https";
    e.host = std::string(u.encoded_host_address());
    if (!e.host.empty() && e.host.front() == '[') e.host = e.host.substr(1, e.host.size() - 2);
    if (e.host.empty()) {
      error(node, path, "must name a host");
      return std::nullopt;
    }
    std::uint16_t default_port = e.tls ? 443 : 80;
    e.port = u.has_port() ? u.port_number() : default_port;
    if (u.has_port() && e.port == 0) {
      error(node, path, "port must be from 1 to 65535");
      return std::nullopt;
    }
    e.base_path = std::string(u.encoded_path());
    while (!e.base_path.empty() && e.base_path.back() == '/') e.base_path.pop_back();
    std::string host_for_header = e.host.find(':') != std::string::npos ? "[" + e.host + "]" : e.host;
    e.host_header = e.port == default_port ? host_for_header
                                           : host_for_header + ":" + std::to_string(e.port);
    return e;
  }

  std::shared_ptr<Config> load(const YAML::Node& root);

 private:
  void load_server(const YAML::Node& n, Config& c);
  void load_admin(const YAML::Node& n, Config& c);
  void load_backends(const YAML::Node& n, Config& c);
  void load_deployments(const YAML::Node& n, Config& c);
  void load_logging(const YAML::Node& n, Config& c);
  void load_routing(const YAML::Node& n, Config& c);
  void load_limits(const YAML::Node& n, const std::string& path, bool client, LimitsConfig& l,
                   bool budget = false);
  void load_budget(const YAML::Node& n, const std::string& path, BudgetConfig& b);
  void load_price(const YAML::Node& n, const std::string& path, PriceConfig& p);
  void load_usage(const YAML::Node& n, Config& c);
  void load_priority(const YAML::Node& n, Config& c);
  std::vector<std::size_t> class_list(const YAML::Node& n, const std::string& path, const Config& c);
  void load_clients(const YAML::Node& root, Config& c);
  void load_auth(const YAML::Node& n, Config& c);
  void load_backend_token(const YAML::Node& n, const std::string& path, bool managed,
                          BackendConfig& b);
  std::optional<ClientKeyConfig> client_key(const YAML::Node& n, const std::string& path);
  void load_health_check(const YAML::Node& n, const std::string& path, BackendConfig& b);

  std::string source_;
  const EnvLookup& env_;
  std::vector<std::string> errors_;
};

void Loader::load_server(const YAML::Node& n, Config& c) {
  const std::string path = "server";
  if (!expect_map(n, path, {"listen", "workers", "limits", "drain_timeout"})) return;
  auto listen = n["listen"];
  if (!listen) {
    error(n, path, "missing required key \"listen\"");
  } else if (!listen.IsSequence() || listen.size() == 0) {
    error(listen, path + ".listen", "must be a non-empty list of {address, tls}");
  } else {
    for (std::size_t i = 0; i < listen.size(); ++i) {
      auto item = listen[i];
      auto p = path + ".listen[" + std::to_string(i) + "]";
      if (!expect_map(item, p, {"address", "tls"})) continue;
      ListenConfig l;
      if (!item["address"]) {
        error(item, p, "missing required key \"address\"");
        continue;
      }
      auto addr = address(item["address"], p + ".address");
      if (!addr) continue;
      l.host = addr->first;
      l.port = addr->second;
      l.text = item["address"].Scalar();
      if (auto tls = item["tls"]) {
        if (expect_map(tls, p + ".tls", {"cert", "key"})) {
          TlsFiles files;
          if (!tls["cert"]) error(tls, p + ".tls", "missing required key \"cert\"");
          if (!tls["key"]) error(tls, p + ".tls", "missing required key \"key\"");
          if (tls["cert"] && tls["key"]) {
            auto cert = file_ref(tls["cert"], p + ".tls.cert");
            auto key = file_ref(tls["key"], p + ".tls.key");
            if (cert && key) l.tls = TlsFiles{*cert, *key};
          }
        }
      }
      c.server.listen.push_back(std::move(l));
    }
  }
  get_uint(n, "workers", path, c.server.workers, 1, 256);
  get_duration(n, "drain_timeout", path, c.server.drain_timeout);
  if (auto limits = n["limits"]) {
    auto p = path + ".limits";
    if (expect_map(limits, p,
                   {"max_request_body", "max_header_size", "header_timeout", "idle_timeout"})) {
      get_size(limits, "max_request_body", p, c.server.limits.max_request_body);
      get_size(limits, "max_header_size", p, c.server.limits.max_header_size);
      get_duration(limits, "header_timeout", p, c.server.limits.header_timeout);
      get_duration(limits, "idle_timeout", p, c.server.limits.idle_timeout);
    }
  }
}

void Loader::load_admin(const YAML::Node& n, Config& c) {
  if (!expect_map(n, "admin", {"address", "enabled", "token", "allow_unauthenticated"})) return;
  if (auto e = n["enabled"]) {
    if (auto v = scalar(e, "admin.enabled")) {
      if (*v == "true") {
        c.admin.enabled = true;
      } else if (*v == "false") {
        c.admin.enabled = false;
      } else {
        error(e, "admin.enabled", "must be true or false");
      }
    }
  }
  if (auto a = n["address"]) {
    if (auto addr = address(a, "admin.address")) {
      c.admin.host = addr->first;
      c.admin.port = addr->second;
      c.admin.text = a.Scalar();
    }
  }
  if (auto t = n["token"]) {
    if (auto v = secret(t, "admin.token")) c.admin.token = *v;
  }
  get_bool(n, "allow_unauthenticated", "admin", c.admin.allow_unauthenticated);
  bool loopback = c.admin.host == "127.0.0.1" || c.admin.host == "::1" || c.admin.host == "localhost";
  if (c.admin.allow_unauthenticated && !loopback) {
    error(n["allow_unauthenticated"], "admin.allow_unauthenticated",
          "only allowed when admin.address is a loopback address (127.0.0.1 or [::1]); set "
          "admin.token instead");
  }
}

void Loader::load_backends(const YAML::Node& n, Config& c) {
  if (!n.IsSequence() || n.size() == 0) {
    error(n, "backends", "must be a non-empty list");
    return;
  }
  std::set<std::string> names;
  for (std::size_t i = 0; i < n.size(); ++i) {
    auto item = n[i];
    auto p = "backends[" + std::to_string(i) + "]";
    if (!expect_map(item, p,
                    {"name", "endpoint", "deployment", "api_key", "ca_file", "timeouts",
                     "max_idle_connections", "keepalive_idle", "region", "max_in_flight",
                     "health_check", "entra", "managed_identity"})) {
      continue;
    }
    BackendConfig b;
    get_string(item, "name", p, b.name, true);
    if (!b.name.empty() && !names.insert(b.name).second) {
      error(item["name"], p + ".name", "duplicate backend name \"" + b.name + "\"");
    }
    if (!item["endpoint"]) {
      error(item, p, "missing required key \"endpoint\"");
    } else if (auto e = endpoint(item["endpoint"], p + ".endpoint")) {
      b.endpoint = *e;
    }
    get_string(item, "deployment", p, b.deployment, true);
    int credentials = (item["api_key"] ? 1 : 0) + (item["entra"] ? 1 : 0) +
                      (item["managed_identity"] ? 1 : 0);
    if (credentials != 1) {
      error(item, p,
            credentials == 0 ? "missing credential: set one of api_key, entra, managed_identity"
                             : "set only one of api_key, entra, managed_identity");
    }
    if (auto k = item["api_key"]) {
      if (auto key = secret(k, p + ".api_key")) b.api_key = *key;
    }
    if (auto e = item["entra"]) load_backend_token(e, p + ".entra", false, b);
    if (auto m = item["managed_identity"]) load_backend_token(m, p + ".managed_identity", true, b);
    if (auto ca = item["ca_file"]) {
      if (auto f = file_ref(ca, p + ".ca_file")) b.ca_file = *f;
    }
    if (auto t = item["timeouts"]) {
      auto tp = p + ".timeouts";
      if (expect_map(t, tp, {"connect", "first_byte", "idle_between_chunks"})) {
        get_duration(t, "connect", tp, b.timeouts.connect);
        get_duration(t, "first_byte", tp, b.timeouts.first_byte);
        get_duration(t, "idle_between_chunks", tp, b.timeouts.idle_between_chunks);
      }
    }
    get_uint(item, "max_idle_connections", p, b.max_idle_connections, 0, 100000);
    get_duration(item, "keepalive_idle", p, b.keepalive_idle);
    get_string(item, "region", p, b.region);
    get_uint(item, "max_in_flight", p, b.max_in_flight, 0, 1000000);
    if (auto hc = item["health_check"]) load_health_check(hc, p + ".health_check", b);
    c.backends.push_back(std::move(b));
  }
}

void Loader::load_deployments(const YAML::Node& n, Config& c) {
  if (!n.IsSequence() || n.size() == 0) {
    error(n, "deployments", "must be a non-empty list");
    return;
  }
  std::unordered_map<std::string, std::size_t> backend_index;
  for (std::size_t i = 0; i < c.backends.size(); ++i) backend_index[c.backends[i].name] = i;
  for (std::size_t i = 0; i < n.size(); ++i) {
    auto item = n[i];
    auto p = "deployments[" + std::to_string(i) + "]";
    if (!expect_map(item, p, {"name", "model", "pools", "regions", "retry", "limits", "price"})) continue;
    DeploymentConfig d;
    d.retry = c.retry;
    if (auto r = item["retry"]) get_retry(r, p + ".retry", d.retry);
    if (auto r = item["regions"]) d.regions = string_list(r, p + ".regions");
    if (auto l = item["limits"]) load_limits(l, p + ".limits", false, d.limits);
    if (auto pr = item["price"]) load_price(pr, p + ".price", d.price);
    get_string(item, "name", p, d.name, true);
    get_string(item, "model", p, d.model);
    if (d.model.empty()) d.model = d.name;
    if (!d.name.empty() && c.deployment_by_name.count(d.name) != 0) {
      error(item["name"], p + ".name", "duplicate deployment name \"" + d.name + "\"");
    }
    auto pools = item["pools"];
    std::set<std::size_t> used;  // a backend appears at most once per deployment
    if (!pools) {
      error(item, p, "missing required key \"pools\"");
    } else if (!pools.IsSequence() || pools.size() == 0) {
      error(pools, p + ".pools", "must be a non-empty list of {backends: [...]}");
    } else {
      for (std::size_t j = 0; j < pools.size(); ++j) {
        auto pool = pools[j];
        auto pp = p + ".pools[" + std::to_string(j) + "]";
        if (!expect_map(pool, pp, {"backends", "classes", "spare"})) continue;
        auto list = pool["backends"];
        if (!list || !list.IsSequence() || list.size() == 0) {
          error(list ? list : pool, pp + ".backends", "must be a non-empty list of backend names");
          continue;
        }
        PoolConfig pc;
        for (std::size_t k = 0; k < list.size(); ++k) {
          auto bp = pp + ".backends[" + std::to_string(k) + "]";
          std::optional<std::string> name;
          std::uint32_t weight = 1;
          if (list[k].IsMap()) {  // {name: B, weight: 3}
            if (!expect_map(list[k], bp, {"name", "weight"})) continue;
            if (!list[k]["name"]) {
              error(list[k], bp, "missing required key \"name\"");
              continue;
            }
            name = scalar(list[k]["name"], bp + ".name");
            get_uint(list[k], "weight", bp, weight, 1, 10000);
          } else {
            name = scalar(list[k], bp);
          }
          if (!name) continue;
          auto it = backend_index.find(*name);
          if (it == backend_index.end()) {
            error(list[k], bp, "unknown backend \"" + *name + "\"");
            continue;
          }
          if (!used.insert(it->second).second) {
            error(list[k], bp, "backend \"" + *name + "\" is listed twice in this deployment");
            continue;
          }
          pc.backends.push_back(it->second);
          pc.weights.push_back(weight);
        }
        if (auto cls = pool["classes"]) pc.classes = class_list(cls, pp + ".classes", c);
        if (auto spare = pool["spare"]) {
          auto sp = pp + ".spare";
          if (expect_map(spare, sp, {"classes", "max_utilization"})) {
            if (auto cls = spare["classes"]) {
              pc.spare_classes = class_list(cls, sp + ".classes", c);
            } else {
              error(spare, sp, "missing required key \"classes\"");
            }
            if (!spare["max_utilization"]) error(spare, sp, "missing required key \"max_utilization\"");
            get_fraction(spare, "max_utilization", sp, pc.spare_max_utilization);
            if (!pool["classes"]) error(spare, sp, "needs pools[].classes: without it every class may use the tier");
          }
        }
        d.pools.push_back(std::move(pc));
      }
    }
    if (!d.regions.empty() && !used.empty()) {
      bool any = false;
      for (auto b : used) {
        any = any || std::find(d.regions.begin(), d.regions.end(), c.backends[b].region) !=
                         d.regions.end();
      }
      if (!any) {
        error(item["regions"], p + ".regions",
              "no backend of this deployment is in one of these regions (set backends[].region)");
      }
    }
    if (!d.name.empty()) c.deployment_by_name.emplace(d.name, c.deployments.size());
    c.deployments.push_back(std::move(d));
  }
}

void Loader::load_logging(const YAML::Node& n, Config& c) {
  if (!expect_map(n, "logging", {"level", "access_log", "format"})) return;
  get_string(n, "level", "logging", c.logging.level);
  static constexpr std::string_view kLevels[] = {"trace", "debug", "info", "warn", "error", "off"};
  if (std::find(std::begin(kLevels), std::end(kLevels), c.logging.level) == std::end(kLevels)) {
    error(n["level"], "logging.level",
          "must be one of trace, debug, info, warn, error, off (got \"" + c.logging.level + "\")");
  }
  get_string(n, "access_log", "logging", c.logging.access_log);
  get_string(n, "format", "logging", c.logging.format);
  if (c.logging.format != "json") {
    error(n["format"], "logging.format", "must be json (got \"" + c.logging.format + "\")");
  }
}

void Loader::load_health_check(const YAML::Node& n, const std::string& path, BackendConfig& b) {
  if (!expect_map(n, path, {"type", "path", "interval", "timeout", "rise", "fall"})) return;
  HealthCheckConfig hc;
  std::string type = "http";
  get_string(n, "type", path, type);
  if (type == "tcp") {
    hc.tcp = true;
    if (n["path"]) error(n["path"], path + ".path", "only for type: http");
  } else if (type != "http") {
    error(n["type"], path + ".type", "must be http or tcp (got \"" + type + "\")");
  }
  get_string(n, "path", path, hc.path);
  if (hc.path.empty() || hc.path.front() != '/') {
    error(n["path"] ? n["path"] : n, path + ".path", "must start with /");
  }
  get_duration(n, "interval", path, hc.interval);
  get_duration(n, "timeout", path, hc.timeout);
  get_uint(n, "rise", path, hc.rise, 1, 100);
  get_uint(n, "fall", path, hc.fall, 1, 100);
  b.health_check = std::move(hc);
}

void Loader::load_backend_token(const YAML::Node& n, const std::string& path, bool managed,
                                BackendConfig& b) {
  BackendTokenConfig t;
  t.managed_identity = managed;
  if (managed) {
    if (!expect_map(n, path, {"client_id", "endpoint", "scope"})) return;
    t.endpoint = "http://169.254.169.254/metadata/identity/oauth2/token";
    get_string(n, "client_id", path, t.client_id);
  } else {
    if (!expect_map(n, path, {"tenant_id", "client_id", "client_secret", "token_endpoint", "scope",
                              "ca_file"})) {
      return;
    }
    get_string(n, "tenant_id", path, t.tenant_id, true);
    get_string(n, "client_id", path, t.client_id, true);
    if (!n["client_secret"]) {
      error(n, path, "missing required key \"client_secret\"");
    } else if (auto v = secret(n["client_secret"], path + ".client_secret")) {
      t.client_secret = *v;
    }
    t.endpoint = "https://login.microsoftonline.com/" + t.tenant_id + "/oauth2/v2.0/token";
    get_string(n, "token_endpoint", path, t.endpoint);
    if (auto ca = n["ca_file"]) {
      if (auto f = file_ref(ca, path + ".ca_file")) t.ca_file = *f;
    }
  }
  if (managed) get_string(n, "endpoint", path, t.endpoint);
  get_string(n, "scope", path, t.scope);
  auto key = managed ? "endpoint" : "token_endpoint";
  // The client secret never travels in clear; IMDS is plain HTTP on a link-local address.
  bool ok = managed ? secure_url(t.endpoint, "169.254.169.254") : secure_url(t.endpoint);
  if (!ok) {
    error(n[key] ? n[key] : n, path + "." + key,
          "must be an https:// URL (http:// only to a loopback address" +
              std::string(managed ? " or 169.254.169.254" : "") + ") (got \"" + t.endpoint + "\")");
  }
  b.token = std::move(t);
}

std::optional<ClientKeyConfig> Loader::client_key(const YAML::Node& n, const std::string& path) {
  YAML::Node key = n;
  std::string key_path = path;
  ClientKeyConfig k;
  if (n.IsMap()) {
    if (!expect_map(n, path, {"key", "expires"})) return std::nullopt;
    if (!n["key"]) {
      error(n, path, "missing required key \"key\"");
      return std::nullopt;
    }
    key.reset(n["key"]);  // reset, not =: assigning to a yaml-cpp node writes through to n
    key_path = path + ".key";
    if (auto e = n["expires"]) {
      auto v = scalar(e, path + ".expires");
      if (!v) return std::nullopt;
      auto t = auth::parse_rfc3339(*v);
      if (!t) {
        error(e, path + ".expires", "must be an RFC 3339 time like 2027-01-01T00:00:00Z (got \"" + *v + "\")");
        return std::nullopt;
      }
      k.expires_unix = *t;
    }
  }
  auto v = scalar(key, key_path);
  if (!v) return std::nullopt;
  if (v->rfind("sha256:", 0) == 0) {
    auto d = auth::digest_from_hex(v->substr(7));
    if (!d) {
      error(key, key_path, "sha256: must be followed by 64 hex digits (the SHA-256 of the key)");
      return std::nullopt;
    }
    k.digest = *d;
    return k;
  }
  if (v->rfind("env:", 0) != 0 && v->rfind("file:", 0) != 0) {
    error(key, key_path,
          "keys must be sha256:<hex>, env:NAME or file:/path (literal keys are not allowed in "
          "the config file; `tollgate keys new` prints a key and its sha256 line)");
    return std::nullopt;
  }
  auto secret_value = secret(key, key_path);
  if (!secret_value) return std::nullopt;
  k.digest = auth::sha256(*secret_value);
  k.prefix = auth::key_prefix(*secret_value);
  return k;
}

void Loader::load_clients(const YAML::Node& root, Config& c) {
  if (auto t = root["tenants"]) {
    if (!t.IsSequence()) {
      error(t, "tenants", "must be a list of {name}");
    } else {
      for (std::size_t i = 0; i < t.size(); ++i) {
        auto p = "tenants[" + std::to_string(i) + "]";
        if (!expect_map(t[i], p, {"name", "limits"})) continue;
        TenantConfig tc;
        get_string(t[i], "name", p, tc.name, true);
        if (auto l = t[i]["limits"]) load_limits(l, p + ".limits", false, tc.limits, true);
        if (tc.name == "none") error(t[i]["name"], p + ".name", "\"none\" is reserved");
        for (const auto& other : c.tenants) {
          if (!tc.name.empty() && other.name == tc.name) {
            error(t[i]["name"], p + ".name", "duplicate tenant name \"" + tc.name + "\"");
          }
        }
        c.tenants.push_back(std::move(tc));
      }
    }
  }
  auto n = root["clients"];
  if (!n) return;
  if (!n.IsSequence()) {
    error(n, "clients", "must be a list of clients");
    return;
  }
  std::map<std::string, std::string> digests;  // hex -> client, to refuse a key shared by two
  for (std::size_t i = 0; i < n.size(); ++i) {
    auto item = n[i];
    auto p = "clients[" + std::to_string(i) + "]";
    if (!expect_map(item, p, {"name", "tenant", "keys", "deployments", "operations", "regions",
                              "principals", "may_pin", "limits", "priority", "weight"})) {
      continue;
    }
    ClientConfig cl;
    get_string(item, "name", p, cl.name, true);
    if (cl.name == "anonymous" || cl.name == "none" || cl.name == "unauthenticated") {
      error(item["name"], p + ".name", "\"" + cl.name + "\" is reserved");
    }
    for (const auto& other : c.clients) {
      if (!cl.name.empty() && other.name == cl.name) {
        error(item["name"], p + ".name", "duplicate client name \"" + cl.name + "\"");
      }
    }
    std::string tenant;
    get_string(item, "tenant", p, tenant);
    if (!tenant.empty()) {
      for (std::size_t t = 0; t < c.tenants.size(); ++t) {
        if (c.tenants[t].name == tenant) cl.tenant = t;
      }
      if (cl.tenant == ClientConfig::kNoTenant) {
        error(item["tenant"], p + ".tenant", "unknown tenant \"" + tenant + "\"");
      }
    }
    if (auto keys = item["keys"]) {
      if (!keys.IsSequence()) {
        error(keys, p + ".keys", "must be a list of keys");
      } else {
        for (std::size_t k = 0; k < keys.size(); ++k) {
          auto kp = p + ".keys[" + std::to_string(k) + "]";
          auto key = client_key(keys[k], kp);
          if (!key) continue;
          auto hex = auth::to_hex(key->digest);
          auto [it, fresh] = digests.emplace(hex, cl.name);
          if (!fresh) {
            error(keys[k], kp, "the same key is configured twice (also for client \"" + it->second + "\")");
            continue;
          }
          cl.keys.push_back(*key);
        }
      }
    }
    if (!item["deployments"]) {
      error(item, p, "missing required key \"deployments\" (the deployments it may use; [\"*\"] for all)");
    } else {
      cl.deployments = string_list(item["deployments"], p + ".deployments");
      for (std::size_t k = 0; k < cl.deployments.size(); ++k) {
        const auto& d = cl.deployments[k];
        if (d != "*" && c.deployment_by_name.count(d) == 0) {
          error(item["deployments"][k], p + ".deployments[" + std::to_string(k) + "]",
                "unknown deployment \"" + d + "\"");
        }
      }
    }
    if (auto ops = item["operations"]) {
      static constexpr std::string_view kOps[] = {
          "chat",    "completions", "embeddings",    "responses", "files",       "batches", "assistants",
          "threads", "vector_stores", "fine_tuning", "uploads",   "models", "other"};
      cl.operations = string_list(ops, p + ".operations");
      for (std::size_t k = 0; k < cl.operations.size(); ++k) {
        if (std::find(std::begin(kOps), std::end(kOps), cl.operations[k]) == std::end(kOps)) {
          error(ops[k], p + ".operations[" + std::to_string(k) + "]",
                "unknown operation \"" + cl.operations[k] +
                    "\" (chat, completions, embeddings, responses, files, batches, assistants, "
                    "threads, vector_stores, fine_tuning, uploads, models, other)");
        }
      }
    }
    if (auto r = item["regions"]) cl.regions = string_list(r, p + ".regions");
    if (auto pr = item["principals"]) cl.principals = string_list(pr, p + ".principals");
    get_bool(item, "may_pin", p, cl.may_pin);
    if (auto l = item["limits"]) load_limits(l, p + ".limits", true, cl.limits);
    if (auto pr = item["priority"]) {
      if (auto name = scalar(pr, p + ".priority")) {
        cl.priority = c.priority.find(*name);
        if (!cl.priority) error(pr, p + ".priority", "unknown priority class \"" + *name + "\"");
      }
    }
    get_number(item, "weight", p, cl.weight, 0.01, 1000, "a number from 0.01 to 1000");
    c.clients.push_back(std::move(cl));
  }
}

void Loader::load_auth(const YAML::Node& n, Config& c) {
  if (!expect_map(n, "auth", {"allow_anonymous", "keys_file", "clock_skew", "jwt"})) return;
  get_bool(n, "allow_anonymous", "auth", c.auth.allow_anonymous);
  get_string(n, "keys_file", "auth", c.auth.keys_file);
  get_duration(n, "clock_skew", "auth", c.auth.clock_skew);
  auto jwt = n["jwt"];
  if (!jwt) return;
  if (!jwt.IsSequence()) {
    error(jwt, "auth.jwt", "must be a list of issuers");
    return;
  }
  for (std::size_t i = 0; i < jwt.size(); ++i) {
    auto item = jwt[i];
    auto p = "auth.jwt[" + std::to_string(i) + "]";
    if (!expect_map(item, p, {"issuer", "audiences", "jwks", "jwks_ca_file", "jwks_refresh",
                              "client_claim", "roles_claim", "role_map"})) {
      continue;
    }
    JwtIssuerConfig j;
    get_string(item, "issuer", p, j.issuer, true);
    for (const auto& other : c.auth.jwt) {
      if (!j.issuer.empty() && other.issuer == j.issuer) {
        error(item["issuer"], p + ".issuer", "duplicate issuer \"" + j.issuer + "\"");
      }
    }
    if (!item["audiences"]) {
      error(item, p, "missing required key \"audiences\"");
    } else {
      j.audiences = string_list(item["audiences"], p + ".audiences");
    }
    std::string jwks;
    get_string(item, "jwks", p, jwks, true);
    if (jwks.rfind("file:", 0) == 0) {
      if (auto f = file_ref(item["jwks"], p + ".jwks")) j.jwks_file = *f;
    } else if (!jwks.empty()) {
      if (!secure_url(jwks)) {
        error(item["jwks"], p + ".jwks",
              "must be an https:// URL (http:// only to a loopback address) or file:/path (got \"" +
                  jwks + "\")");
      }
      j.jwks_url = jwks;
    }
    if (auto ca = item["jwks_ca_file"]) {
      if (auto f = file_ref(ca, p + ".jwks_ca_file")) j.jwks_ca_file = *f;
    }
    get_duration(item, "jwks_refresh", p, j.jwks_refresh);
    get_string(item, "client_claim", p, j.client_claim);
    get_string(item, "roles_claim", p, j.roles_claim);
    if (auto rm = item["role_map"]) {
      if (!rm.IsMap()) {
        error(rm, p + ".role_map", "must be a mapping of role -> client name");
      } else {
        for (const auto& kv : rm) {
          auto role = kv.first.as<std::string>("");
          auto client = scalar(kv.second, p + ".role_map." + role);
          if (!client) continue;
          bool known = false;
          for (const auto& cl : c.clients) known = known || cl.name == *client;
          if (!known) {
            error(kv.second, p + ".role_map." + role, "unknown client \"" + *client + "\"");
            continue;
          }
          j.role_map.emplace_back(role, *client);
        }
      }
    }
    c.auth.jwt.push_back(std::move(j));
  }
}

void Loader::load_limits(const YAML::Node& n, const std::string& path, bool client,
                         LimitsConfig& l, bool budget) {
  if (client) {
    if (!expect_map(n, path, {"tokens_per_minute", "requests_per_minute", "max_tokens_cap",
                              "default_max_tokens", "budget"})) {
      return;
    }
    get_uint(n, "max_tokens_cap", path, l.max_tokens_cap, 1, 100'000'000);
    get_uint(n, "default_max_tokens", path, l.default_max_tokens, 1, 100'000'000);
    if (l.max_tokens_cap > 0 && l.default_max_tokens > l.max_tokens_cap) {
      error(n["default_max_tokens"], path + ".default_max_tokens", "must not exceed max_tokens_cap");
    }
  } else if (budget) {
    if (!expect_map(n, path, {"tokens_per_minute", "requests_per_minute", "budget"})) return;
  } else if (!expect_map(n, path, {"tokens_per_minute", "requests_per_minute"})) {
    return;
  }
  get_uint(n, "tokens_per_minute", path, l.tokens_per_minute, 1, 1'000'000'000'000);
  get_uint(n, "requests_per_minute", path, l.requests_per_minute, 1, 1'000'000'000);
  if (auto b = n["budget"]; b && (client || budget)) load_budget(b, path + ".budget", l.budget);
}

void Loader::load_budget(const YAML::Node& n, const std::string& path, BudgetConfig& b) {
  if (!expect_map(n, path, {"tokens_per_day", "tokens_per_month", "usd_per_day", "usd_per_month",
                            "warn_at"})) {
    return;
  }
  get_uint(n, "tokens_per_day", path, b.tokens_per_day, 1, 1'000'000'000'000'000);
  get_uint(n, "tokens_per_month", path, b.tokens_per_month, 1, 1'000'000'000'000'000);
  constexpr double kMaxUsd = 1e9;  // nano-USD in 64 bits, with room to spare
  get_number(n, "usd_per_day", path, b.usd_per_day, 1e-9, kMaxUsd, "a positive amount in USD");
  get_number(n, "usd_per_month", path, b.usd_per_month, 1e-9, kMaxUsd, "a positive amount in USD");
  get_number(n, "warn_at", path, b.warn_at, 0.01, 1, "a share from 0.01 to 1, like 0.8");
  if (!b.any()) error(n, path, "names no budget: set tokens_per_day, tokens_per_month, usd_per_day or usd_per_month");
}

void Loader::load_price(const YAML::Node& n, const std::string& path, PriceConfig& p) {
  if (!expect_map(n, path, {"prompt_per_1k", "completion_per_1k", "cached_prompt_per_1k",
                            "reasoning_per_1k"})) {
    return;
  }
  constexpr std::string_view what = "a price in USD per 1,000 tokens, 0 or more";
  p.cached_prompt_per_1k = -1;
  p.reasoning_per_1k = -1;
  get_number(n, "prompt_per_1k", path, p.prompt_per_1k, 0, 1e6, what);
  get_number(n, "completion_per_1k", path, p.completion_per_1k, 0, 1e6, what);
  get_number(n, "cached_prompt_per_1k", path, p.cached_prompt_per_1k, 0, 1e6, what);
  get_number(n, "reasoning_per_1k", path, p.reasoning_per_1k, 0, 1e6, what);
  if (p.cached_prompt_per_1k < 0) p.cached_prompt_per_1k = p.prompt_per_1k;
  if (p.reasoning_per_1k < 0) p.reasoning_per_1k = p.completion_per_1k;
  p.set = true;
}

std::vector<std::size_t> Loader::class_list(const YAML::Node& n, const std::string& path,
                                            const Config& c) {
  std::vector<std::size_t> out;
  auto names = string_list(n, path);
  for (std::size_t i = 0; i < names.size(); ++i) {
    auto idx = c.priority.find(names[i]);
    if (!idx) {
      error(n[i], path + "[" + std::to_string(i) + "]", "unknown priority class \"" + names[i] + "\"");
    } else {
      out.push_back(*idx);
    }
  }
  return out;
}

void Loader::load_priority(const YAML::Node& n, Config& c) {
  const std::string path = "priority";
  if (!expect_map(n, path, {"classes", "default", "header", "timeout_headers"})) return;
  auto& pr = c.priority;
  if (auto cls = n["classes"]) {
    if (!cls.IsSequence() || cls.size() == 0 || cls.size() > 8) {
      error(cls, path + ".classes", "must be a list of 1 to 8 {name, max_queue_wait, queue_limit}");
    } else {
      pr.classes.clear();
      for (std::size_t i = 0; i < cls.size(); ++i) {
        auto cp = path + ".classes[" + std::to_string(i) + "]";
        if (!expect_map(cls[i], cp, {"name", "max_queue_wait", "queue_limit"})) continue;
        PriorityClassConfig k;
        get_string(cls[i], "name", cp, k.name, true);
        if (auto w = cls[i]["max_queue_wait"]) {
          auto v = scalar(w, cp + ".max_queue_wait");
          auto d = v ? (*v == "0" ? std::optional<Millis>(0) : parse_duration(*v)) : std::nullopt;
          if (v && (!d || d->count() < 0 || d->count() > 600'000)) {
            error(w, cp + ".max_queue_wait", "must be a duration from 0 to 10m, like 5s (got \"" + *v + "\")");
          } else if (d) {
            k.max_queue_wait = *d;
          }
        }
        get_uint(cls[i], "queue_limit", cp, k.queue_limit, 1, 1'000'000);
        if (!k.name.empty() && pr.find(k.name)) {
          error(cls[i]["name"], cp + ".name", "duplicate priority class \"" + k.name + "\"");
        }
        pr.classes.push_back(std::move(k));
      }
    }
  }
  pr.default_class = pr.find("normal").value_or(pr.classes.size() / 2);
  std::string def;
  get_string(n, "default", path, def);
  if (!def.empty()) {
    if (auto idx = pr.find(def)) {
      pr.default_class = *idx;
    } else {
      error(n["default"], path + ".default", "unknown priority class \"" + def + "\"");
    }
  }
  get_string(n, "header", path, pr.header);
  std::transform(pr.header.begin(), pr.header.end(), pr.header.begin(), ::tolower);
  if (auto th = n["timeout_headers"]) {
    pr.timeout_headers = th.IsSequence() && th.size() == 0 ? std::vector<std::string>{}
                                                           : string_list(th, path + ".timeout_headers");
    for (auto& h : pr.timeout_headers) std::transform(h.begin(), h.end(), h.begin(), ::tolower);
  }
}

void Loader::load_usage(const YAML::Node& n, Config& c) {
  const std::string path = "usage";
  if (!expect_map(n, path, {"ledger", "flush_interval", "batch_size", "max_buffered"})) return;
  auto& u = c.usage;
  get_string(n, "ledger", path, u.ledger);
  get_duration(n, "flush_interval", path, u.flush_interval);
  get_uint(n, "batch_size", path, u.batch_size, 1, 1'000'000);
  get_uint(n, "max_buffered", path, u.max_buffered, 1, 100'000'000);
  if (!u.ledger.empty()) {
    auto dir = std::filesystem::path(u.ledger).parent_path();
    std::error_code ec;
    if (!dir.empty() && !std::filesystem::is_directory(dir, ec)) {
      error(n["ledger"], path + ".ledger", "directory " + dir.string() + " does not exist");
    }
  }
}

void Loader::load_routing(const YAML::Node& n, Config& c) {
  const std::string path = "routing";
  if (!expect_map(n, path, {"cooldown", "breaker", "affinity", "pin_header"})) return;
  auto& r = c.routing;
  if (auto cd = n["cooldown"]) {
    auto p = path + ".cooldown";
    if (expect_map(cd, p, {"default", "min", "max"})) {
      get_duration(cd, "default", p, r.cooldown_default);
      get_duration(cd, "min", p, r.cooldown_min);
      get_duration(cd, "max", p, r.cooldown_max);
      if (r.cooldown_min > r.cooldown_max) error(cd, p, "min must not exceed max");
    }
  }
  if (auto br = n["breaker"]) {
    auto p = path + ".breaker";
    if (expect_map(br, p, {"failures", "open", "max_open"})) {
      get_uint(br, "failures", p, r.breaker_failures, 1, 1000);
      get_duration(br, "open", p, r.breaker_open);
      get_duration(br, "max_open", p, r.breaker_max_open);
      if (r.breaker_open > r.breaker_max_open) error(br, p, "open must not exceed max_open");
    }
  }
  if (auto af = n["affinity"]) {
    auto p = path + ".affinity";
    if (expect_map(af, p, {"max_entries", "ttl", "deployment"})) {
      get_uint(af, "max_entries", p, r.affinity_max_entries, 1, 100'000'000);
      get_duration(af, "ttl", p, r.affinity_ttl);
      std::string name;
      get_string(af, "deployment", p, name);
      if (!name.empty()) {
        auto it = c.deployment_by_name.find(name);
        if (it == c.deployment_by_name.end()) {
          error(af["deployment"], p + ".deployment", "unknown deployment \"" + name + "\"");
        } else {
          r.affinity_deployment = it->second;
        }
      }
    }
  }
  get_string(n, "pin_header", path, r.pin_header);
  std::transform(r.pin_header.begin(), r.pin_header.end(), r.pin_header.begin(), ::tolower);
}

std::shared_ptr<Config> Loader::load(const YAML::Node& root) {
  auto c = std::make_shared<Config>();
  c->source = source_;
  if (!root.IsMap()) {
    error(root, "", "the configuration must be a YAML mapping");
    return nullptr;
  }
  expect_map(root, "", {"server", "admin", "backends", "deployments", "logging", "tokenizer",
                        "retry", "routing", "tenants", "clients", "auth", "policy", "usage",
                        "priority"});
  if (auto r = root["retry"]) get_retry(r, "retry", c->retry);
  c->priority.classes = {{"high", Millis(0), 1000}, {"normal", Millis(0), 1000}, {"low", Millis(0), 1000}};
  if (auto p = root["priority"]) load_priority(p, *c);
  if (auto s = root["server"]) {
    load_server(s, *c);
  } else {
    error(root, "", "missing required key \"server\"");
  }
  if (auto a = root["admin"]) load_admin(a, *c);
  if (auto b = root["backends"]) {
    load_backends(b, *c);
  } else {
    error(root, "", "missing required key \"backends\"");
  }
  if (auto d = root["deployments"]) {
    load_deployments(d, *c);
  } else {
    error(root, "", "missing required key \"deployments\"");
  }
  if (auto l = root["logging"]) load_logging(l, *c);
  if (auto r = root["routing"]) load_routing(r, *c);
  if (auto u = root["usage"]) load_usage(u, *c);
  if (auto p = root["policy"]) {
    if (expect_map(p, "policy", {"over_cap", "max_n", "max_best_of"})) {
      std::string over = "clamp";
      get_string(p, "over_cap", "policy", over);
      if (over == "reject") {
        c->policy.reject_over_cap = true;
      } else if (over != "clamp") {
        error(p["over_cap"], "policy.over_cap", "must be clamp or reject (got \"" + over + "\")");
      }
      get_uint(p, "max_n", "policy", c->policy.max_n, 1, 128);
      get_uint(p, "max_best_of", "policy", c->policy.max_best_of, 1, 128);
    }
  }
  load_clients(root, *c);
  bool anonymous_set = false;
  if (auto a = root["auth"]) {
    load_auth(a, *c);
    anonymous_set = a.IsMap() && a["allow_anonymous"];
  }
  if (c->clients.empty() && c->auth.jwt.empty() && !c->auth.allow_anonymous && errors_.empty()) {
    error(root, "auth",
          anonymous_set ? "no clients and no auth.jwt issuers, and anonymous access is off: nobody could call the gateway"
                        : "no clients and no auth.jwt issuers are configured: add clients, or set "
                          "auth.allow_anonymous: true to serve anyone who can reach the listener");
  }
  if (auto t = root["tokenizer"]) {
    if (expect_map(t, "tokenizer", {"data_dir"})) {
      get_string(t, "data_dir", "tokenizer", c->tokenizer.data_dir);
    }
  }
  if (!errors_.empty()) return nullptr;
  return c;
}

}  // namespace

const ClientConfig* Config::find_client(std::string_view name) const {
  for (const auto& c : clients) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

const DeploymentConfig* Config::find_deployment(std::string_view name) const {
  auto it = deployment_by_name.find(std::string(name));
  return it == deployment_by_name.end() ? nullptr : &deployments[it->second];
}

EnvLookup process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
}

std::optional<Millis> parse_duration(std::string_view text) {
  std::uint64_t n = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc{} || ptr == text.data()) return std::nullopt;
  std::string_view unit(ptr, text.data() + text.size() - ptr);
  if (n > 10'000'000'000ULL) return std::nullopt;
  if (unit == "ms") return Millis(n);
  if (unit == "s") return Millis(n * 1000);
  if (unit == "m") return Millis(n * 60'000);
  if (unit == "h") return Millis(n * 3'600'000);
  return std::nullopt;
}

std::optional<std::size_t> parse_size(std::string_view text) {
  std::uint64_t n = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc{} || ptr == text.data()) return std::nullopt;
  std::string_view unit(ptr, text.data() + text.size() - ptr);
  std::uint64_t mult = 0;
  if (unit.empty() || unit == "B") mult = 1;
  if (unit == "KiB") mult = 1ULL << 10;
  if (unit == "MiB") mult = 1ULL << 20;
  if (unit == "GiB") mult = 1ULL << 30;
  if (unit == "KB" || unit == "kB") mult = 1000;
  if (unit == "MB") mult = 1000 * 1000;
  if (unit == "GB") mult = 1000 * 1000 * 1000;
  if (mult == 0 || n > (1ULL << 40) / mult) return std::nullopt;
  return static_cast<std::size_t>(n * mult);
}

LoadResult load_string(const std::string& yaml, const std::string& source_name,
                       const EnvLookup& env) {
  Loader loader(source_name, env);
  LoadResult result;
  try {
    auto root = YAML::Load(yaml);
    if (auto c = loader.load(root)) {
      if (c->server.workers == 0) {
        c->server.workers = std::max(1u, std::thread::hardware_concurrency());
      }
      result.config = std::move(c);
    }
  } catch (const YAML::Exception& e) {
    loader.error(e.mark, "", "YAML syntax error: " + e.msg);
  }
  result.errors = std::move(loader.errors());
  if (!result.errors.empty()) result.config.reset();
  return result;
}

LoadResult load_file(const std::string& path, const EnvLookup& env) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    LoadResult r;
    r.errors.push_back(path + ":1:1: (root): cannot read the configuration file");
    return r;
  }
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return load_string(text, path, env);
}

}  // namespace tollgate::config

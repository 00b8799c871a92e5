// The schema of the config file: one table per config struct, next to each other, in the order
// the document is read. Defaults are the member initialisers in config.hpp (and, for a struct
// with two shapes, the table's `init`); the docs test (config_schema_test.cpp) holds
// docs/configuration.md to these tables.

#include "config/tables.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>

#include "config/values.hpp"
#include "tollgate/crypto/crypto.hpp"

namespace tollgate::config::schema {
namespace {

// server.replica_name's default.
std::string host_name() {
  std::array<char, 256> name{};
  if (gethostname(name.data(), name.size() - 1) != 0 || name[0] == '\0') return "tollgate";
  return name.data();
}

// ---- Shared tables: retry, limits, budgets, prices -------------------------------------------

const Table<RetryConfig>& retry_table() {
  static const Table<RetryConfig> t{
      .fields = {value("max_attempts", &RetryConfig::max_attempts, UInt{1, 10}),
                 value("deadline", &RetryConfig::deadline, Duration{}),
                 value("budget", &RetryConfig::budget, kFraction),
                 value("min_retries", &RetryConfig::min_retries, UInt{0, 100'000})},
      .doc_root = "retry"};
  return t;
}

const Table<BudgetConfig>& budget_table() {
  constexpr double kMaxUsd = 1e9;  // nano-USD in 64 bits, with room to spare
  constexpr Number kUsd{1e-9, kMaxUsd, "a positive amount in USD"};
  static const Table<BudgetConfig> t{
      .fields = {value("tokens_per_day", &BudgetConfig::tokens_per_day,
                       UInt{1, 1'000'000'000'000'000})
                     .doc("none"),
                 value("tokens_per_month", &BudgetConfig::tokens_per_month,
                       UInt{1, 1'000'000'000'000'000})
                     .doc("none"),
                 value("usd_per_day", &BudgetConfig::usd_per_day, kUsd).doc("none"),
                 value("usd_per_month", &BudgetConfig::usd_per_month, kUsd).doc("none"),
                 value("warn_at", &BudgetConfig::warn_at,
                       Number{0.01, 1, "a share from 0.01 to 1, like 0.8"})},
      .check =
          [](BudgetConfig& b, const Node& n, const std::string& path, Ctx& ctx) {
            if (!b.any()) {
              ctx.error(n, path,
                        "names no budget: set tokens_per_day, tokens_per_month, usd_per_day or "
                        "usd_per_month");
            }
          },
      .doc_root = "limits.budget"};
  return t;
}

Field<LimitsConfig> tokens_per_minute() {
  return value("tokens_per_minute", &LimitsConfig::tokens_per_minute, UInt{1, 1'000'000'000'000})
      .doc("none");
}
Field<LimitsConfig> requests_per_minute() {
  return value("requests_per_minute", &LimitsConfig::requests_per_minute, UInt{1, 1'000'000'000})
      .doc("none");
}
Field<LimitsConfig> budget() {
  return nested("budget", &LimitsConfig::budget, budget_table());
}

/// A deployment's limits: the backends' shared quota.
const Table<LimitsConfig>& deployment_limits_table() {
  static const Table<LimitsConfig> t{.fields = {tokens_per_minute(), requests_per_minute()},
                                     .doc_root = "limits"};
  return t;
}

const Table<LimitsConfig>& tenant_limits_table() {
  static const Table<LimitsConfig> t{
      .fields = {tokens_per_minute(), requests_per_minute(), budget()}, .doc_root = "limits"};
  return t;
}

const Table<LimitsConfig>& client_limits_table() {
  static const Table<LimitsConfig> t{
      .fields =
          {value("max_tokens_cap", &LimitsConfig::max_tokens_cap, UInt{1, 100'000'000}).doc("none"),
           value("default_max_tokens", &LimitsConfig::default_max_tokens, UInt{1, 100'000'000})
               .doc("none"),
           tokens_per_minute(), requests_per_minute(), budget()},
      .check =
          [](LimitsConfig& l, const Node& n, const std::string& path, Ctx& ctx) {
            if (l.max_tokens_cap > 0 && l.default_max_tokens > l.max_tokens_cap) {
              ctx.error(n["default_max_tokens"], join(path, "default_max_tokens"),
                        "must not exceed max_tokens_cap");
            }
          },
      .doc_root = "limits"};
  return t;
}

const Table<PriceConfig>& price_table() {
  constexpr Number kPrice{0, 1e6, "a price in USD per 1,000 tokens, 0 or more"};
  static const Table<PriceConfig> t{
      .fields = {value("prompt_per_1k", &PriceConfig::prompt_per_1k, kPrice),
                 value("completion_per_1k", &PriceConfig::completion_per_1k, kPrice),
                 value("cached_prompt_per_1k", &PriceConfig::cached_prompt_per_1k, kPrice)
                     .doc("`prompt_per_1k`"),
                 value("reasoning_per_1k", &PriceConfig::reasoning_per_1k, kPrice)
                     .doc("`completion_per_1k`")},
      .check =
          [](PriceConfig& p, const Node& n, const std::string&, Ctx&) {
            if (!n["cached_prompt_per_1k"]) p.cached_prompt_per_1k = p.prompt_per_1k;
            if (!n["reasoning_per_1k"]) p.reasoning_per_1k = p.completion_per_1k;
            p.set = true;
          },
      .doc_root = "price"};
  return t;
}

// ---- server, admin ---------------------------------------------------------------------------

/// A listener's certificate and key (server.listen[].tls, admin.tls).
const Table<TlsFiles>& tls_files_table() {
  static const Table<TlsFiles> t{.fields = {value("cert", &TlsFiles::cert_file, FileRef{}).need(),
                                            value("key", &TlsFiles::key_file, FileRef{}).need()}};
  return t;
}

const Table<ListenConfig>& listen_table() {
  const auto& tls = tls_files_table();
  static const Table<ListenConfig> t{.fields = {value_with<ListenConfig>(
                                                    "address", Address{},
                                                    [](ListenConfig& l, Address::Value a) {
                                                      l.host = std::move(a.host);
                                                      l.port = a.port;
                                                      l.text = std::move(a.text);
                                                    },
                                                    [](const ListenConfig& l) { return l.text; })
                                                    .need()
                                                    .stops_on_error(),
                                                nested("tls", &ListenConfig::tls, tls)}};
  return t;
}

const Table<ServerConfig>& server_table() {
  static const Table<ServerLimits> limits{
      .fields = {value("max_request_body", &ServerLimits::max_request_body, Size{}),
                 value("max_header_size", &ServerLimits::max_header_size, Size{}),
                 value("max_buffered_bytes", &ServerLimits::max_buffered_bytes, Size{}),
                 value("max_json_depth", &ServerLimits::max_json_depth, UInt{1, 1024}),
                 value("header_timeout", &ServerLimits::header_timeout, Duration{}),
                 value("idle_timeout", &ServerLimits::idle_timeout, Duration{}),
                 value("max_connections_per_ip", &ServerLimits::max_connections_per_ip,
                       UInt{0, 1'000'000})}};
  static const Table<ServerConfig> t{
      .fields = {
          list("listen", &ServerConfig::listen, listen_table(),
               "must be a non-empty list of {address, tls}")
              .need(),
          value("workers", &ServerConfig::workers, UInt{1, 256}).doc("number of hardware threads"),
          value("drain_timeout", &ServerConfig::drain_timeout, Duration{}),
          value("replica_name", &ServerConfig::replica_name, Text{.non_empty = true})
              .doc("the host name"),
          nested("limits", &ServerConfig::limits, limits)},
      .check = [](ServerConfig& s, const Node&, const std::string&, Ctx&) {
        if (s.replica_name.empty()) s.replica_name = host_name();
      }};
  return t;
}

const Table<AdminConfig>& admin_table() {
  static const Table<AdminConfig> t{
      .fields = {value("enabled", &AdminConfig::enabled, Bool{}),
                 value_with<AdminConfig>(
                     "address", Address{},
                     [](AdminConfig& a, Address::Value v) {
                       a.host = std::move(v.host);
                       a.port = v.port;
                       a.text = std::move(v.text);
                     },
                     [](const AdminConfig& a) { return a.text; }),
                 nested("tls", &AdminConfig::tls, tls_files_table()),
                 value("token", &AdminConfig::token, Secret{}).doc("none"),
                 value("allow_unauthenticated", &AdminConfig::allow_unauthenticated, Bool{})},
      .check = [](AdminConfig& a, const Node& n, const std::string& path, Ctx& ctx) {
        bool loopback = a.host == "127.0.0.1" || a.host == "::1" || a.host == "localhost";
        if (a.allow_unauthenticated && !loopback) {
          ctx.error(n["allow_unauthenticated"], join(path, "allow_unauthenticated"),
                    "only allowed when admin.address is a loopback address (127.0.0.1 or "
                    "[::1]); set admin.token instead");
        }
      }};
  return t;
}

// ---- backends --------------------------------------------------------------------------------

/// The token endpoint must not receive the client secret in clear; IMDS is plain HTTP on a
/// link-local address.
void check_token_endpoint(const BackendTokenConfig& t, const Node& n, const std::string& path,
                          Ctx& ctx) {
  const bool managed = t.managed_identity;
  const char* key = managed ? "endpoint" : "token_endpoint";
  if (secure_url(t.endpoint, managed ? "169.254.169.254" : "")) return;
  ctx.error(n[key] ? n[key] : n, join(path, key),
            "must be an https:// URL (http:// only to a loopback address" +
                std::string(managed ? " or 169.254.169.254" : "") + ") (got \"" + t.endpoint +
                "\")");
}

Field<BackendTokenConfig> scope() {
  return value("scope", &BackendTokenConfig::scope, Text{});
}

const Table<BackendTokenConfig>& entra_table() {
  using T = BackendTokenConfig;
  static const Table<T> t{
      .fields = {value("tenant_id", &T::tenant_id, Text{.non_empty = true}).need(),
                 value("client_id", &T::client_id, Text{.non_empty = true}).need(),
                 value("client_secret", &T::client_secret, Secret{}).need(),
                 value("token_endpoint", &T::endpoint, Text{})
                     .preceded_by([](T& tok, const Node&, const std::string&, Ctx&) {
                       tok.endpoint = "https://login.microsoftonline.com/" + tok.tenant_id +
                                      "/oauth2/v2.0/token";
                     })
                     .doc("`https://login.microsoftonline.com/<tenant_id>/oauth2/v2.0/token`"),
                 scope(), value("ca_file", &T::ca_file, FileRef{}).doc("the system trust store")},
      .check = [](T& tok, const Node& n, const std::string& path, Ctx& ctx) {
        check_token_endpoint(tok, n, path, ctx);
      }};
  return t;
}

const Table<BackendTokenConfig>& managed_identity_table() {
  using T = BackendTokenConfig;
  static const Table<T> t{.fields = {value("client_id", &T::client_id, Text{}).doc("none"),
                                     value("endpoint", &T::endpoint, Text{}), scope()},
                          .init =
                              [](T& tok, Ctx&) {
                                tok.managed_identity = true;
                                tok.endpoint = std::string(kImdsTokenEndpoint);
                              },
                          .check = [](T& tok, const Node& n, const std::string& path,
                                      Ctx& ctx) { check_token_endpoint(tok, n, path, ctx); }};
  return t;
}

const Table<HealthCheckConfig>& health_check_table() {
  using T = HealthCheckConfig;
  static const Table<T> t{
      .fields = {value("type", &T::tcp,
                       Enum<bool>{{{"http", false}, {"tcp", true}}, "http or tcp"}),
                 value("path", &T::path, AbsPath{}), value("interval", &T::interval, Duration{}),
                 value("timeout", &T::timeout, Duration{}), value("rise", &T::rise, UInt{1, 100}),
                 value("fall", &T::fall, UInt{1, 100})},
      .check = [](T& hc, const Node& n, const std::string& path, Ctx& ctx) {
        if (hc.tcp && n["path"]) ctx.error(n["path"], join(path, "path"), "only for type: http");
      }};
  return t;
}

void check_one_credential(BackendConfig&, const Node& n, const std::string& path, Ctx& ctx) {
  int credentials = (n["api_key"] ? 1 : 0) + (n["entra"] ? 1 : 0) + (n["managed_identity"] ? 1 : 0);
  if (credentials == 1) return;
  ctx.error(n, path,
            credentials == 0 ? "missing credential: set one of api_key, entra, managed_identity"
                             : "set only one of api_key, entra, managed_identity");
}

const Table<BackendConfig>& backend_table() {
  using T = BackendConfig;
  static const Table<BackendTimeouts> timeouts{
      .fields = {value("resolve", &BackendTimeouts::resolve, Duration{}),
                 value("connect", &BackendTimeouts::connect, Duration{}),
                 value("first_byte", &BackendTimeouts::first_byte, Duration{}),
                 value("idle_between_chunks", &BackendTimeouts::idle_between_chunks, Duration{})}};
  static const Table<T> t{
      .fields = {
          value("name", &T::name, Name{"backend name"}).need(),
          value("endpoint", &T::endpoint, EndpointUrl{}).need(),
          value("deployment", &T::deployment, Text{.non_empty = true}).need(),
          value("api_key", &T::api_key, Secret{}).preceded_by(check_one_credential).doc("none"),
          nested("entra", &T::token, entra_table()),
          nested("managed_identity", &T::token, managed_identity_table()),
          value("ca_file", &T::ca_file, FileRef{}).doc("the system trust store"),
          nested("timeouts", &T::timeouts, timeouts),
          value("max_idle_connections", &T::max_idle_connections, UInt{0, 100'000}),
          value("keepalive_idle", &T::keepalive_idle, Duration{}),
          value("region", &T::region, Text{}).doc("none"),
          value("max_in_flight", &T::max_in_flight, UInt{0, 1'000'000}),
          nested("health_check", &T::health_check, health_check_table())}};
  return t;
}

// ---- deployments -----------------------------------------------------------------------------

/// One entry of pools[].backends in its mapping form, {name: B, weight: 3}.
struct PoolEntry {
  std::optional<std::string> name;
  std::uint32_t weight = 1;
};

const Table<PoolEntry>& pool_entry_table() {
  static const Table<PoolEntry> t{.fields = {value("name", &PoolEntry::name, Text{}).need(),
                                             value("weight", &PoolEntry::weight, UInt{1, 10'000})}};
  return t;
}

/// A backend name or {name, weight}; the backend must exist and appear once per deployment.
void parse_pool_entry(PoolConfig& pc, const Node& n, const std::string& path, Ctx& ctx) {
  PoolEntry e;
  if (n.IsMap()) {
    if (!parse_table(pool_entry_table(), e, n, path, ctx)) return;
  } else {
    e.name = ctx.scalar(n, path);
  }
  if (!e.name) return;
  const auto& backends = ctx.config().backends;
  auto it = std::find_if(backends.begin(), backends.end(),
                         [&](const BackendConfig& b) { return b.name == *e.name; });
  if (it == backends.end()) {
    ctx.error(n, path, "unknown backend \"" + *e.name + "\"");
    return;
  }
  // The deployment being read is the next one to be appended.
  auto space = "backends of deployment " + std::to_string(ctx.config().deployments.size());
  if (ctx.claim(space, *e.name, *e.name)) {
    ctx.error(n, path, "backend \"" + *e.name + "\" is listed twice in this deployment");
    return;
  }
  pc.backends.push_back(static_cast<std::size_t>(it - backends.begin()));
  pc.weights.push_back(e.weight);
}

Field<PoolConfig> pool_backends() {
  auto f = custom<PoolConfig>("backends",
                              [](PoolConfig& pc, const Node& n, const std::string& path, Ctx& ctx) {
                                if (!n.IsSequence() || n.size() == 0) {
                                  ctx.error(n, path, "must be a non-empty list of backend names");
                                  return;
                                }
                                for (std::size_t k = 0; k < n.size(); ++k)
                                  parse_pool_entry(pc, n[k], index(path, k), ctx);
                              });
  f.nested = [](const std::string& path, std::vector<KeyDoc>& out) {
    document(pool_entry_table(), path + "[]", out);
  };
  return f.need_as("must be a non-empty list of backend names");
}

const Table<PoolConfig>& pool_table() {
  static const Table<PoolConfig> spare{
      .fields = {value("classes", &PoolConfig::spare_classes, ClassList{}).need(),
                 value("max_utilization", &PoolConfig::spare_max_utilization, kFraction).need()}};
  static const Table<PoolConfig> t{
      .fields = {pool_backends(),
                 value("classes", &PoolConfig::classes, ClassList{}).doc("all classes"),
                 section("spare", spare)},
      .check = [](PoolConfig&, const Node& n, const std::string& path, Ctx& ctx) {
        if (n["spare"] && n["spare"].IsMap() && !n["classes"]) {
          ctx.error(n["spare"], join(path, "spare"),
                    "needs pools[].classes: without it every class may use the tier");
        }
      }};
  return t;
}

/// A passthrough entry is an operation path as the canonical request path spells it: plain
/// segments (letters, digits, - . _ ~) separated by single '/'. A leading or trailing '/' is
/// dropped.
void check_passthrough(DeploymentConfig& d, const Node& n, const std::string& path, Ctx& ctx) {
  auto plain = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '.' || c == '_' ||
           c == '~';
  };
  for (std::size_t i = 0; i < d.passthrough.size(); ++i) {
    auto& op = d.passthrough[i];
    if (op.starts_with('/')) op.erase(0, 1);
    if (op.ends_with('/')) op.pop_back();
    bool ok = !op.empty() && op.find("//") == std::string::npos && !op.starts_with('/');
    for (auto c : op) ok = ok && (c == '/' || plain(c));
    for (std::string_view dots : {"./", "../"}) ok = ok && !op.starts_with(dots);
    ok = ok && op != "." && op != ".." && op.find("/./") == std::string::npos &&
         op.find("/../") == std::string::npos && !op.ends_with("/.") && !op.ends_with("/..");
    if (!ok) {
      ctx.error(n["passthrough"][i], index(join(path, "passthrough"), i),
                "must be an operation path such as audio/transcriptions (got \"" + op + "\")");
    }
  }
}

/// The model defaults to the name; `regions` must leave at least one backend.
void check_deployment(DeploymentConfig& d, const Node& n, const std::string& path, Ctx& ctx) {
  auto& c = ctx.config();
  if (d.model.empty()) d.model = d.name;
  bool any_backend = false;
  bool in_region = false;
  for (const auto& pool : d.pools) {
    for (auto b : pool.backends) {
      any_backend = true;
      const auto& region = c.backends[b].region;
      in_region =
          in_region || std::find(d.regions.begin(), d.regions.end(), region) != d.regions.end();
    }
  }
  if (!d.regions.empty() && any_backend && !in_region) {
    ctx.error(n["regions"], join(path, "regions"),
              "no backend of this deployment is in one of these regions (set backends[].region)");
  }
  check_passthrough(d, n, path, ctx);
  if (!d.name.empty()) c.deployment_by_name.emplace(d.name, c.deployments.size());
}

const Table<DeploymentConfig>& deployment_table() {
  using T = DeploymentConfig;
  static const Table<T> t{
      .fields = {nested("retry", &T::retry, retry_table()),
                 value("regions", &T::regions, StringList{}).doc("any region"),
                 nested("limits", &T::limits, deployment_limits_table()),
                 nested("price", &T::price, price_table()),
                 value("name", &T::name, Name{"deployment name"}).need(),
                 value("model", &T::model, Text{}).doc("the `name`"),
                 value("passthrough", &T::passthrough,
                       StringList{.allow_empty = true, .lower = true})
                     .doc("none"),
                 list("pools", &T::pools, pool_table(),
                      "must be a non-empty list of {backends: [...]}")
                     .need()},
      .init = [](T& d, Ctx& ctx) { d.retry = ctx.config().retry; },  // then its overrides
      .check = check_deployment};
  return t;
}

// ---- logging, routing, usage, policy, priority, tokenizer ------------------------------------

const Table<LoggingConfig>& logging_table() {
  using Words = Enum<std::string>;
  static const Table<LoggingConfig> t{
      .fields = {value("level", &LoggingConfig::level,
                       Words{{{"trace", "trace"},
                              {"debug", "debug"},
                              {"info", "info"},
                              {"warn", "warn"},
                              {"error", "error"},
                              {"off", "off"}},
                             "one of trace, debug, info, warn, error, off"}),
                 value("access_log", &LoggingConfig::access_log, Text{}),
                 value("format", &LoggingConfig::format, Words{{{"json", "json"}}, "json"})}};
  return t;
}

const Table<RoutingConfig>& routing_table() {
  using T = RoutingConfig;
  static const Table<T> cooldown{
      .fields = {value("default", &T::cooldown_default, Duration{}),
                 value("min", &T::cooldown_min, Duration{}),
                 value("max", &T::cooldown_max, Duration{})},
      .check = [](T& r, const Node& n, const std::string& path, Ctx& ctx) {
        if (r.cooldown_min > r.cooldown_max) ctx.error(n, path, "min must not exceed max");
      }};
  static const Table<T> breaker{
      .fields = {value("failures", &T::breaker_failures, UInt{1, 1000}),
                 value("open", &T::breaker_open, Duration{}),
                 value("max_open", &T::breaker_max_open, Duration{})},
      .check = [](T& r, const Node& n, const std::string& path, Ctx& ctx) {
        if (r.breaker_open > r.breaker_max_open)
          ctx.error(n, path, "open must not exceed max_open");
      }};
  static const Table<T> affinity{
      .fields = {value("max_entries", &T::affinity_max_entries, UInt{1, 100'000'000}),
                 value("ttl", &T::affinity_ttl, Duration{}),
                 value("deployment", &T::affinity_deployment, SkipEmpty<DeploymentRef>{})
                     .doc("the first deployment")}};
  static const Table<T> t{
      .fields = {section("cooldown", cooldown), section("breaker", breaker),
                 section("affinity", affinity),
                 value("pin_header", &T::pin_header, Text{.lower = true}).doc("empty")}};
  return t;
}

const Table<UsageConfig>& usage_table() {
  using P = PostgresLedgerConfig;
  static const Table<P> postgres{
      .fields = {value_with<P>("url", PostgresUrl{},
                               [](P& p, PostgresUrl::Value v) {
                                 p.url = std::move(v.url);
                                 p.where = std::move(v.where);
                               },
                               [](const P& p) { return p.where; })
                     .need(),
                 value("table", &P::table, SqlTableName{}),
                 // 20 parameters a record; PostgreSQL takes at most 65,535 in one statement.
                 value("batch_size", &P::batch_size, UInt{1, 3'000}),
                 value("flush_interval", &P::flush_interval, Duration{}),
                 value("max_backlog", &P::max_backlog, UInt{1, 1'000'000'000}),
                 value("timeout", &P::timeout, Duration{})}};
  static const Table<UsageConfig> t{
      .fields = {value("ledger", &UsageConfig::ledger, Text{}).doc("none"),
                 value("flush_interval", &UsageConfig::flush_interval, Duration{}),
                 value("batch_size", &UsageConfig::batch_size, UInt{1, 1'000'000}),
                 value("max_buffered", &UsageConfig::max_buffered, UInt{1, 100'000'000}),
                 nested("postgres", &UsageConfig::postgres, postgres)},
      .check = [](UsageConfig& u, const Node& n, const std::string& path, Ctx& ctx) {
        if (auto r = PathInExistingDir{}.read(u.ledger, ctx); !r.ok()) {
          ctx.error(n["ledger"], join(path, "ledger"), r.error());
        }
        if (n["postgres"] && u.ledger.empty()) {
          ctx.error(n["postgres"], join(path, "postgres"),
                    "needs usage.ledger: records are written to that local spool first, then shipped");
        }
      }};
  return t;
}

const Table<PolicyConfig>& policy_table() {
  static const Table<PolicyConfig> t{
      .fields = {value("over_cap", &PolicyConfig::reject_over_cap,
                       Enum<bool>{{{"clamp", false}, {"reject", true}}, "clamp or reject"}),
                 value("max_n", &PolicyConfig::max_n, UInt{1, 128}).doc("none"),
                 value("max_best_of", &PolicyConfig::max_best_of, UInt{1, 128}).doc("none")}};
  return t;
}

const Table<PriorityClassConfig>& priority_class_table() {
  using T = PriorityClassConfig;
  static const Table<T> t{
      .fields = {value("name", &T::name, Name{"priority class"}).need(),
                 value("max_queue_wait", &T::max_queue_wait,
                       Wait{Millis(600'000), "a duration from 0 to 10m, like 5s"}),
                 value("queue_limit", &T::queue_limit, UInt{1, 1'000'000})}};
  return t;
}

/// priority.classes: 1 to 8 classes, replacing the default three.
Field<PriorityConfig> priority_classes() {
  auto f = custom<PriorityConfig>(
      "classes", [](PriorityConfig& pr, const Node& n, const std::string& path, Ctx& ctx) {
        if (!n.IsSequence() || n.size() == 0 || n.size() > 8) {
          ctx.error(n, path, "must be a list of 1 to 8 {name, max_queue_wait, queue_limit}");
          return;
        }
        pr.classes.clear();
        for (std::size_t i = 0; i < n.size(); ++i) {
          PriorityClassConfig k;
          if (parse_table(priority_class_table(), k, n[i], index(path, i), ctx)) {
            pr.classes.push_back(std::move(k));
          }
        }
      });
  f.row = [](const PriorityConfig& proto) {
    KeyDoc d;
    StringList::Value names;
    for (const auto& k : proto.classes) names.push_back(k.name);
    d.value = StringList{}.canonical(names);
    d.canonical = [](std::string_view text) -> std::optional<std::string> {
      return std::string(text);
    };
    return d;
  };
  f.nested = [](const std::string& path, std::vector<KeyDoc>& out) {
    document(priority_class_table(), path + "[]", out);
  };
  return f;
}

const Table<PriorityConfig>& priority_table() {
  using T = PriorityConfig;
  static const Table<T> t{.fields = {priority_classes(),
                                     value("default", &T::default_class, SkipEmpty<ClassRef>{})
                                         .doc("`normal` if defined, else the middle class"),
                                     value("header", &T::header, Text{.lower = true}).doc("none"),
                                     value("timeout_headers", &T::timeout_headers,
                                           StringList{.allow_empty = true, .lower = true})},
                          .check = [](T& pr, const Node& n, const std::string&, Ctx&) {
                            if (!n["default"])
                              pr.default_class = pr.find("normal").value_or(pr.classes.size() / 2);
                          }};
  return t;
}

// "ip", "ip:port" or "[ipv6]:port": what c-ares accepts as a server.
bool dns_server(std::string_view s) {
  auto ip = [](std::string_view h, int family) {
    std::array<unsigned char, sizeof(in6_addr)> buf{};
    return inet_pton(family, std::string(h).c_str(), buf.data()) == 1;
  };
  auto port = [](std::string_view p) {
    unsigned v = 0;
    auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), v);
    return ec == std::errc{} && end == p.data() + p.size() && v >= 1 && v <= 65535;
  };
  if (s.starts_with('[')) {
    auto close = s.find("]:");
    return close != std::string_view::npos && ip(s.substr(1, close - 1), AF_INET6) && port(s.substr(close + 2));
  }
  if (ip(s, AF_INET) || ip(s, AF_INET6)) return true;
  auto colon = s.rfind(':');
  return colon != std::string_view::npos && ip(s.substr(0, colon), AF_INET) && port(s.substr(colon + 1));
}

const Table<DnsConfig>& dns_table() {
  static const Table<DnsConfig> t{
      .fields = {value("servers", &DnsConfig::servers, StringList{}).doc("the system's"),
                 value("timeout", &DnsConfig::timeout, Duration{}),
                 value("min_ttl", &DnsConfig::min_ttl, Duration{}),
                 value("max_ttl", &DnsConfig::max_ttl, Duration{})},
      .check = [](DnsConfig& d, const Node& n, const std::string& path, Ctx& ctx) {
        for (const auto& s : d.servers) {
          if (!dns_server(s)) {
            ctx.error(n["servers"], join(path, "servers"),
                      "\"" + s + "\" is not an IP address with an optional port (1.1.1.1, "
                      "10.0.0.2:53, [fd00::53]:53)");
          }
        }
        if (d.min_ttl > d.max_ttl) ctx.error(n["min_ttl"], join(path, "min_ttl"), "must not exceed max_ttl");
      }};
  return t;
}

const Table<TokenizerConfig>& tokenizer_table() {
  static const Table<TokenizerConfig> t{
      .fields = {value("data_dir", &TokenizerConfig::data_dir, Text{}).doc("empty"),
                 value("count_cache", &TokenizerConfig::count_cache, Size{.zero_allowed = true})}};
  return t;
}

const Table<ClusterConfig>& cluster_table() {
  using T = ClusterConfig;
  static const Table<T> redis{
      .fields = {value("url", &T::redis, RedisUrl{}).need(),
                 value("password", &T::password, Secret{}).doc("none"),
                 value("key_prefix", &T::key_prefix, Text{}),
                 value("timeout", &T::timeout, Duration{}),
                 value("ca_file", &T::ca_file, FileRef{}).doc("the system's CAs")},
      .check = [](T& c, const Node& n, const std::string& path, Ctx& ctx) {
        if (!c.password.empty() && !c.redis.password.empty()) {
          ctx.error(n["password"], join(path, "password"), "the URL already carries a password");
        } else if (!c.password.empty()) {
          c.redis.password = c.password;
        }
        if (!c.redis.user.empty() && c.redis.password.empty() && n["url"]) {
          ctx.error(n["url"], join(path, "url"), "names user '" + c.redis.user + "' but no password: set cluster.redis.password");
        }
      }};
  using L = ClusterConfig::Lease;
  static const Table<L> lease{
      .fields = {value("share", &L::share, kFraction), value("ttl", &L::ttl, Duration{})}};
  static const Table<T> t{
      .fields = {section("redis", redis).need(), nested("lease", &T::lease, lease),
                 value("on_failure", &T::on_failure,
                       Enum<ClusterFailure>{{{"local", ClusterFailure::kLocal}, {"deny", ClusterFailure::kDeny}},
                                            "local or deny"})}};
  return t;
}

// ---- tenants, clients ------------------------------------------------------------------------

const Table<TenantConfig>& tenant_table() {
  static const Table<TenantConfig> t{
      .fields = {value("name", &TenantConfig::name, Name{"tenant name", {"none"}}).need(),
                 nested("limits", &TenantConfig::limits, tenant_limits_table()),
                 value("share_objects", &TenantConfig::share_objects, Bool{})}};
  return t;
}

/// sha256:<hex>, env:NAME or file:/path -> the key's digest (and prefix when it is known).
struct ClientKey {
  using Value = ClientKeyConfig;
  Read<ClientKeyConfig> read(std::string_view text, Ctx& ctx) const {
    ClientKeyConfig k;
    if (text.rfind("sha256:", 0) == 0) {
      auto d = crypto::digest_from_hex(text.substr(7));
      if (!d) return Fail{"sha256: must be followed by 64 hex digits (the SHA-256 of the key)"};
      k.digest = *d;
      return k;
    }
    if (text.rfind("env:", 0) != 0 && text.rfind("file:", 0) != 0) {
      return Fail{
          "keys must be sha256:<hex>, env:NAME or file:/path (literal keys are not allowed in "
          "the config file; `tollgate keys new` prints a key and its sha256 line)"};
    }
    auto secret = Secret{}.read(text, ctx);
    if (!secret.ok()) return Fail{secret.error()};
    k.digest = crypto::sha256(*secret);
    k.prefix = crypto::key_prefix(*secret);
    return k;
  }
};

/// An RFC 3339 time -> Unix seconds.
struct Rfc3339 {
  using Value = std::int64_t;
  Read<std::int64_t> read(std::string_view text, Ctx&) const {
    if (auto t = crypto::parse_rfc3339(text)) return *t;
    return Fail{"must be an RFC 3339 time like 2027-01-01T00:00:00Z (got \"" + std::string(text) +
                "\")"};
  }
};

/// A keys[] entry in its mapping form, {key, expires}.
struct KeyEntry {
  std::optional<ClientKeyConfig> key;
  std::optional<std::int64_t> expires;
};

const Table<KeyEntry>& key_entry_table() {
  static const Table<KeyEntry> t{
      .fields = {value("key", &KeyEntry::key, ClientKey{}).need(),
                 value("expires", &KeyEntry::expires, Rfc3339{}).doc("never")}};
  return t;
}

std::optional<ClientKeyConfig> client_key(const Node& n, const std::string& path, Ctx& ctx) {
  if (!n.IsMap()) return read_value(ClientKey{}, n, path, ctx);
  KeyEntry e;
  if (!parse_table(key_entry_table(), e, n, path, ctx) || !e.key) return std::nullopt;
  e.key->expires_unix = e.expires;
  return e.key;
}

/// clients[].keys: each key once in the whole file.
Field<ClientConfig> client_keys() {
  auto f = custom<ClientConfig>(
      "keys", [](ClientConfig& cl, const Node& n, const std::string& path, Ctx& ctx) {
        if (!n.IsSequence()) {
          ctx.error(n, path, "must be a list of keys");
          return;
        }
        for (std::size_t k = 0; k < n.size(); ++k) {
          auto kp = index(path, k);
          auto key = client_key(n[k], kp, ctx);
          if (!key) continue;
          if (auto owner = ctx.claim("client key", crypto::to_hex(key->digest), cl.name)) {
            ctx.error(n[k], kp,
                      "the same key is configured twice (also for client \"" + *owner + "\")");
            continue;
          }
          cl.keys.push_back(*key);
        }
      });
  f.nested = [](const std::string& path, std::vector<KeyDoc>& out) {
    document(key_entry_table(), path + "[]", out);
  };
  return f.doc("none");
}

const Table<ClientConfig>& client_table() {
  using T = ClientConfig;
  static const WordList kOperations{
      {"chat", "completions", "embeddings", "responses", "files", "batches", "assistants",
       "threads", "vector_stores", "fine_tuning", "uploads", "models", "other"},
      "operation",
      "chat, completions, embeddings, responses, files, batches, assistants, threads, "
      "vector_stores, fine_tuning, uploads, models, other"};
  static const Table<T> t{
      .fields = {
          value("name", &T::name, Name{"client name", {"anonymous", "none", "unauthenticated"}})
              .need(),
          value("tenant", &T::tenant, SkipEmpty<TenantRef>{}).doc("none"), client_keys(),
          value("deployments", &T::deployments, DeploymentList{})
              .need(" (the deployments it may use; [\"*\"] for all)"),
          value("operations", &T::operations, kOperations).doc("all operations"),
          value("regions", &T::regions, StringList{}).doc("any region"),
          value("principals", &T::principals, StringList{}).doc("none"),
          value("may_pin", &T::may_pin, Bool{}),
          nested("limits", &T::limits, client_limits_table()),
          value("priority", &T::priority, ClassRef{}).doc("`priority.default`"),
          value("weight", &T::weight, Number{0.01, 1000, "a number from 0.01 to 1000"})}};
  return t;
}

// ---- auth ------------------------------------------------------------------------------------

/// jwks: an https:// URL (http:// to loopback) or file:/path.
void parse_jwks(JwtIssuerConfig& j, const Node& n, const std::string& path, Ctx& ctx) {
  auto jwks = read_value(Text{.non_empty = true}, n, path, ctx);
  if (!jwks) return;
  if (jwks->rfind("file:", 0) == 0) {
    if (auto f = read_value(FileRef{}, n, path, ctx)) j.jwks_file = *f;
    return;
  }
  if (!secure_url(*jwks)) {
    ctx.error(n, path,
              "must be an https:// URL (http:// only to a loopback address) or file:/path (got \"" +
                  *jwks + "\")");
  }
  j.jwks_url = *jwks;
}

/// role_map: role -> the name of a configured client.
void parse_role_map(JwtIssuerConfig& j, const Node& n, const std::string& path, Ctx& ctx) {
  if (!n.IsMap()) {
    ctx.error(n, path, "must be a mapping of role -> client name");
    return;
  }
  for (const auto& kv : n) {
    auto role = kv.first.as<std::string>("");
    auto rp = path + "." + role;
    auto client = ctx.scalar(kv.second, rp);
    if (!client) continue;
    if (!ctx.config().find_client(*client)) {
      ctx.error(kv.second, rp, "unknown client \"" + *client + "\"");
      continue;
    }
    j.role_map.emplace_back(role, *client);
  }
}

const Table<JwtIssuerConfig>& jwt_table() {
  using T = JwtIssuerConfig;
  static const Table<T> t{
      .fields = {value("issuer", &T::issuer, Name{"issuer"}).need(),
                 value("audiences", &T::audiences, StringList{}).need(),
                 custom<T>("jwks", parse_jwks).need(),
                 value("jwks_ca_file", &T::jwks_ca_file, FileRef{}).doc("the system trust store"),
                 value("jwks_refresh", &T::jwks_refresh, Duration{}),
                 value("client_claim", &T::client_claim, Text{}),
                 value("roles_claim", &T::roles_claim, Text{}),
                 custom<T>("role_map", parse_role_map).doc("none")}};
  return t;
}

const Table<AuthConfig>& auth_table() {
  static const Table<AuthConfig> t{
      .fields = {value("allow_anonymous", &AuthConfig::allow_anonymous, Bool{}),
                 value("keys_file", &AuthConfig::keys_file, Text{}).doc("none"),
                 value("clock_skew", &AuthConfig::clock_skew, Duration{}),
                 list("jwt", &AuthConfig::jwt, jwt_table(), "must be a list of issuers", false)
                     .doc("none")}};
  return t;
}

// ---- The document ----------------------------------------------------------------------------

/// Someone must be able to call the gateway (reported only when nothing else is wrong).
void check_callers(Config& c, const Node& root, const std::string&, Ctx& ctx) {
  if (!c.clients.empty() || !c.auth.jwt.empty() || c.auth.allow_anonymous) return;
  if (ctx.error_count() != 0) return;
  auto auth = root["auth"];
  bool anonymous_set = auth && auth.IsMap() && auth["allow_anonymous"];
  ctx.error(root, "auth",
            anonymous_set ? "no clients and no auth.jwt issuers, and anonymous access is off: "
                            "nobody could call the gateway"
                          : "no clients and no auth.jwt issuers are configured: add clients, or "
                            "set auth.allow_anonymous: true to serve anyone who can reach the "
                            "listener");
}

/// The top level, in reading order: what others refer to comes first (retry before deployments,
/// priority classes before pools and clients, backends before deployments before clients).
const Table<Config>& root_table() {
  static const Table<Config> t{
      .fields =
          {nested("retry", &Config::retry, retry_table()),
           nested("priority", &Config::priority, priority_table()),
           nested("server", &Config::server, server_table()).need(),
           nested("admin", &Config::admin, admin_table()),
           list("backends", &Config::backends, backend_table(), "must be a non-empty list").need(),
           list("deployments", &Config::deployments, deployment_table(), "must be a non-empty list")
               .need(),
           nested("logging", &Config::logging, logging_table()),
           nested("routing", &Config::routing, routing_table()),
           nested("usage", &Config::usage, usage_table()),
           nested("policy", &Config::policy, policy_table()),
           list("tenants", &Config::tenants, tenant_table(), "must be a list of {name}", false)
               .doc("none"),
           list("clients", &Config::clients, client_table(), "must be a list of clients", false)
               .doc("none"),
           nested("auth", &Config::auth, auth_table()),
           nested("tokenizer", &Config::tokenizer, tokenizer_table()),
           nested("dns", &Config::dns, dns_table()),
           nested("cluster", &Config::cluster, cluster_table())},
      .check = check_callers};
  return t;
}

}  // namespace

void parse_config(const Node& root, Ctx& ctx) {
  parse_table(root_table(), ctx.config(), root, "", ctx);
}

}  // namespace tollgate::config::schema

namespace tollgate::config {

std::vector<KeyDoc> documented_keys() {
  std::vector<KeyDoc> all;
  for (const auto& f : schema::root_table().fields) {
    if (f.nested) f.nested(f.key, all);  // the sections are the page's headings, not rows
  }
  std::vector<KeyDoc> unique;
  for (auto& d : all) {
    auto same = [&](const KeyDoc& u) { return u.path == d.path; };
    if (std::none_of(unique.begin(), unique.end(), same)) unique.push_back(std::move(d));
  }
  return unique;
}

}  // namespace tollgate::config

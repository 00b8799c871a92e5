#pragma once
// The validated, immutable configuration of one generation ("snapshot") of the gateway.
// Built only by config::load_*; read by every thread; never mutated after loading.
// The member initialisers are the defaults of the config file's keys (the one place they are
// written); src/config/tables.cpp maps keys to members, and a unit test holds
// docs/configuration.md to both.

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tollgate/config/redis_url.hpp"

namespace tollgate::config {

using Millis = std::chrono::milliseconds;

/// A parsed backend endpoint URL (http:// or https://).
struct Endpoint {
  std::string scheme;     // "http" or "https"
  std::string host;       // host name or IP literal, without brackets
  std::uint16_t port = 0;
  std::string base_path;  // "" or "/prefix" (no trailing slash)
  bool tls = false;
  std::string host_header;  // what goes into Host: (host[:port] unless default port)
  std::string text;         // the URL as configured, for logs and docs
};

struct TlsFiles {
  std::string cert_file;
  std::string key_file;
};

struct ListenConfig {
  std::string host;
  std::uint16_t port = 0;  // 0: an ephemeral port, logged at start-up
  std::optional<TlsFiles> tls;
  std::string text;  // "host:port" as configured
};

struct ServerLimits {
  std::size_t max_request_body = 8u << 20;
  std::size_t max_header_size = 64u << 10;
  std::size_t max_buffered_bytes = std::size_t{256} << 20;  // request bodies held, all connections
  unsigned max_json_depth = 64;  // containers nested in a JSON request body
  Millis header_timeout{10'000};  // whole request (header and body) must arrive within this
  Millis idle_timeout{60'000};    // keep-alive wait for the next request; stalled client writes
  std::uint32_t max_connections_per_ip = 0;  // open client connections per source address; 0: no cap
};

struct ServerConfig {
  std::vector<ListenConfig> listen;
  unsigned workers = 0;  // 0: std::thread::hardware_concurrency()
  ServerLimits limits;
  Millis drain_timeout{30'000};
  std::string replica_name;  // names this replica in every usage record; "" in the file: the host name
};

struct AdminConfig {
  bool enabled = true;
  std::string host = "127.0.0.1";
  std::uint16_t port = 9090;
  std::string text = "127.0.0.1:9090";
  std::optional<TlsFiles> tls;         // set: the admin listener serves HTTPS only
  std::string token;                   // resolved secret: bearer token for /admin/*; "" = none
  bool allow_unauthenticated = false;  // loopback only: /admin/* without a token
};

struct BackendTimeouts {
  Millis resolve{2'000};  // DNS lookup of the endpoint's name (also its health probes)
  Millis connect{5'000};
  Millis first_byte{60'000};
  Millis idle_between_chunks{30'000};
};

/// Active health check of one backend (off unless configured).
struct HealthCheckConfig {
  bool tcp = false;  // false: HTTP GET `path`; true: TCP (and TLS) connect only
  std::string path = "/openai/models?api-version=2024-10-21";
  Millis interval{10'000};
  Millis timeout{2'000};
  unsigned rise = 2;  // consecutive passes that make an unhealthy backend healthy
  unsigned fall = 3;  // consecutive failures that make a healthy backend unhealthy
};

/// Where `managed_identity` asks for tokens unless its `endpoint` says otherwise (Azure IMDS).
inline constexpr std::string_view kImdsTokenEndpoint =
    "http://169.254.169.254/metadata/identity/oauth2/token";

/// An Entra ID token the gateway obtains itself for a backend (instead of an api-key).
struct BackendTokenConfig {
  bool managed_identity = false;  // false: OAuth2 client credentials
  std::string tenant_id;
  std::string client_id;          // managed identity: optional (user-assigned identity)
  std::string client_secret;      // resolved secret (client credentials)
  std::string endpoint;           // token endpoint or IMDS URL
  std::string scope = "https://cognitiveservices.azure.com/.default";
  std::string ca_file;            // optional CA bundle for an https token endpoint
};

struct BackendConfig {
  std::string name;
  Endpoint endpoint;
  std::string deployment;  // the deployment name on that resource
  std::string api_key;     // resolved secret; never logged; "" when `token` is set
  std::optional<BackendTokenConfig> token;
  std::string ca_file;     // optional PEM bundle path; empty: system trust store
  BackendTimeouts timeouts;
  std::size_t max_idle_connections = 64;  // per worker
  Millis keepalive_idle{60'000};          // idle upstream connections older than this are closed
  std::string region;                     // free-form; "" = none (deployment regions exclude it)
  std::uint32_t max_in_flight = 0;        // concurrent requests across the gateway; 0 = no cap
  std::optional<HealthCheckConfig> health_check;
};

struct PoolConfig {
  std::vector<std::size_t> backends;     // indices into Config::backends
  std::vector<std::uint32_t> weights;    // parallel to backends, each >= 1
  std::vector<std::size_t> classes;      // priority classes that may use the tier; empty = all
  std::vector<std::size_t> spare_classes;  // may use it too while utilization is below:
  double spare_max_utilization = 0;        // 0..1
  bool allows(std::size_t cls) const {
    return classes.empty() || std::find(classes.begin(), classes.end(), cls) != classes.end();
  }
  bool spare_for(std::size_t cls) const {
    return std::find(spare_classes.begin(), spare_classes.end(), cls) != spare_classes.end();
  }
};

/// A priority class (`priority.classes[]`), highest first.
struct PriorityClassConfig {
  std::string name;
  Millis max_queue_wait{0};     // 0: never wait for capacity (answered at once)
  std::size_t queue_limit = 1000;  // waiting requests per deployment
};

/// Priority classes, per-request lowering and the client's own timeout (`priority`).
struct PriorityConfig {
  std::vector<PriorityClassConfig> classes = {{"high"}, {"normal"}, {"low"}};  // highest first
  std::size_t default_class = 1;             // of anonymous callers and clients without one
  std::string header;                        // lowers a request's class; "" = off
  std::vector<std::string> timeout_headers = {"x-ms-client-request-timeout"};  // seconds
  std::optional<std::size_t> find(std::string_view name) const {
    for (std::size_t i = 0; i < classes.size(); ++i) {
      if (classes[i].name == name) return i;
    }
    return std::nullopt;
  }
};

/// Calendar budgets of a client or tenant (UTC days and months; 0 = none).
struct BudgetConfig {
  std::int64_t tokens_per_day = 0;
  std::int64_t tokens_per_month = 0;
  double usd_per_day = 0;
  double usd_per_month = 0;
  double warn_at = 0.8;  // share of a budget whose crossing is logged and exported
  bool any() const {
    return tokens_per_day > 0 || tokens_per_month > 0 || usd_per_day > 0 || usd_per_month > 0;
  }
};

/// What a deployment's tokens cost, in USD per 1,000 tokens (`price`).
struct PriceConfig {
  double prompt_per_1k = 0;
  double completion_per_1k = 0;
  double cached_prompt_per_1k = 0;  // defaults to prompt_per_1k
  double reasoning_per_1k = 0;      // defaults to completion_per_1k (reasoning is output)
  bool set = false;
};

/// Admission limits of a client, tenant or deployment (0 = no limit).
struct LimitsConfig {
  std::int64_t tokens_per_minute = 0;
  std::int64_t requests_per_minute = 0;
  std::int64_t max_tokens_cap = 0;      // clients: the largest output allowance a request may ask
  std::int64_t default_max_tokens = 0;  // clients: the allowance set when a request asks none
  BudgetConfig budget;                  // clients and tenants
  bool any_rate() const { return tokens_per_minute > 0 || requests_per_minute > 0; }
};

/// What the gateway does with requests that ask too much (`policy`).
struct PolicyConfig {
  bool reject_over_cap = false;  // over_cap: reject (400) instead of clamp
  std::int64_t max_n = 0;        // 0 = no limit
  std::int64_t max_best_of = 0;  // 0 = no limit
};

/// Failover retries of one request (top-level `retry`, overridable per deployment).
struct RetryConfig {
  unsigned max_attempts = 3;  // attempts per request, the first included
  Millis deadline{60'000};    // no new attempt once this much time passed since arrival
  double budget = 0.2;        // retries in progress <= max(min_retries, budget * requests in progress)
  unsigned min_retries = 3;
};

struct DeploymentConfig {
  std::string name;   // what clients use
  std::string model;  // OpenAI model name (tokenizer choice)
  std::vector<PoolConfig> pools;
  std::vector<std::string> regions;  // allowed backend regions; empty = any
  RetryConfig retry;                 // top-level retry with this deployment's overrides applied
  LimitsConfig limits;               // protects the backends' shared quota
  PriceConfig price;                 // cost attribution and money budgets
  // Operations the gateway does not know that it forwards anyway ("audio/transcriptions"): op
  // paths relative to the surface, in lower case, without leading or trailing '/'. Empty: none.
  std::vector<std::string> passthrough;
};

/// The fleet's ledger (`usage.postgres`): the spool's records shipped to one PostgreSQL table
/// (docs/design/ledger.md).
struct PostgresLedgerConfig {
  std::string url;      // resolved: may carry a password; never logged (see `where`)
  std::string where;    // the URL without its password, for logs and errors
  std::string table = "tollgate_usage";  // created if missing; migrations in code
  std::size_t batch_size = 1000;         // records per INSERT at most
  Millis flush_interval{1'000};          // the longest a record waits in the spool while PG is up
  std::size_t max_backlog = 10'000'000;  // spool rows kept; beyond, the oldest shipped go
  Millis timeout{5'000};                 // connect, and each round trip
  bool operator==(const PostgresLedgerConfig&) const = default;
};

/// The durable usage ledger (`usage`).
struct UsageConfig {
  std::string ledger;                 // SQLite database path; "" = no ledger
  Millis flush_interval{200};         // the longest a record waits before its batch commits
  std::size_t batch_size = 1000;      // records per transaction at most
  std::size_t max_buffered = 100'000; // records held in memory while the disk refuses them
  std::optional<PostgresLedgerConfig> postgres;  // set: the ledger is the spool of a fleet's
};

/// Capacity model, circuit breaker, affinity and pinning (`routing`).
struct RoutingConfig {
  Millis cooldown_default{5'000};  // a 429 that says nothing about when to come back
  Millis cooldown_min{100};        // floor and cap of the backend's own hint
  Millis cooldown_max{60'000};
  unsigned breaker_failures = 5;   // consecutive failures that open the breaker
  Millis breaker_open{5'000};      // first open period; doubles per reopen up to breaker_max_open
  Millis breaker_max_open{300'000};
  std::size_t affinity_max_entries = 100'000;
  Millis affinity_ttl{86'400'000};
  std::size_t affinity_deployment = 0;  // index: serves stateful calls that name no model
  std::string pin_header;               // "" = pinning off
};

struct TenantConfig {
  std::string name;
  LimitsConfig limits;
  bool share_objects = false;  // any client of the tenant may use the objects of the others
};

/// A key as configured: its SHA-256 digest and optional expiry.
struct ClientKeyConfig {
  std::array<unsigned char, 32> digest{};
  std::string prefix;             // first characters of the key when it is known ("" for sha256:)
  std::optional<std::int64_t> expires_unix;  // seconds
};

struct ClientConfig {
  std::string name;
  std::size_t tenant = kNoTenant;     // index into Config::tenants
  std::vector<ClientKeyConfig> keys;
  std::vector<std::string> deployments;  // "*" = all
  std::vector<std::string> operations;   // empty = all
  std::vector<std::string> regions;      // empty = any
  std::vector<std::string> principals;   // JWT client_claim values that mean this client
  bool may_pin = false;
  LimitsConfig limits;
  std::optional<std::size_t> priority;  // class index; nullopt = priority.default_class
  double weight = 1;                    // share within its class when capacity is contended
  static constexpr std::size_t kNoTenant = static_cast<std::size_t>(-1);
};

struct JwtIssuerConfig {
  std::string issuer;
  std::vector<std::string> audiences;
  std::string jwks_url;   // https:// (or http://) URL; "" when jwks_file is used
  std::string jwks_file;  // file:PATH
  std::string jwks_ca_file;
  Millis jwks_refresh{3'600'000};
  std::string client_claim = "azp";
  std::string roles_claim = "roles";
  std::vector<std::pair<std::string, std::string>> role_map;  // role -> client name
};

struct AuthConfig {
  bool allow_anonymous = false;
  std::string keys_file;  // runtime keys (admin API); "" = none
  Millis clock_skew{60'000};
  std::vector<JwtIssuerConfig> jwt;
};

struct LoggingConfig {
  std::string level = "info";         // trace|debug|info|warn|error|off
  std::string access_log = "stdout";  // stdout|stderr|off|<file path>
  std::string format = "json";        // json (the only format for now)
};

struct TokenizerConfig {
  std::string data_dir;  // empty: TOLLGATE_TOKENIZER_DIR or the compiled-in default
  std::size_t count_cache = std::size_t{8} << 20;  // memoized chat message counts; 0 = none
};

/// Name resolution of backends, health probes, JWKS and token endpoints (applied at start-up).
struct DnsConfig {
  std::vector<std::string> servers;  // "ip" or "ip:port" / "[ipv6]:port"; empty: /etc/resolv.conf
  Millis timeout{2'000};             // lookups of JWKS and token endpoints
  Millis min_ttl{1'000};             // an answer is kept at least this long
  Millis max_ttl{300'000};           // and at most this long, whatever its TTL
};

/// What admission does while the shared store is unreachable (`cluster.on_failure`).
enum class ClusterFailure : std::uint8_t {
  kLocal,  // local buckets sized limit / replicas seen; settled into Redis when it is back
  kDeny,   // limited requests get 503 with x-should-retry: true
};

/// N replicas behaving as one (`cluster`): limits, budgets, keys, object owners and backend
/// state shared through Redis. Absent: one process keeps its own state (docs/design/cluster.md).
struct ClusterConfig {
  RedisAddress redis;               // redis.url (+ redis.password), where replicas share state; host "" = none
  std::string password;             // redis.password (resolved); copied into redis.password
  std::string key_prefix = "tollgate:";  // several gateways may share one Redis
  Millis timeout{50};               // per round trip; a slower answer counts as a failure
  std::string ca_file;              // rediss://: CA bundle for the server's certificate; "" = system
  ClusterFailure on_failure = ClusterFailure::kLocal;
  struct Lease {
    double share = 0.01;  // of a limit or budget, per top-up of a worker's lease; 0: none
    Millis ttl{1000};     // leased units unused this long after their grant go back
  } lease;
  bool enabled() const { return !redis.host.empty(); }
};

struct Config {
  std::string source;  // file name the config came from
  ServerConfig server;
  AdminConfig admin;
  std::vector<BackendConfig> backends;
  std::vector<DeploymentConfig> deployments;
  LoggingConfig logging;
  TokenizerConfig tokenizer;
  RetryConfig retry;
  RoutingConfig routing;
  std::vector<TenantConfig> tenants;
  std::vector<ClientConfig> clients;
  AuthConfig auth;
  PolicyConfig policy;
  UsageConfig usage;
  PriorityConfig priority;
  DnsConfig dns;
  ClusterConfig cluster;
  const ClientConfig* find_client(std::string_view name) const;

  /// Index of the deployment clients call `name`, or nullptr.
  const DeploymentConfig* find_deployment(std::string_view name) const;
  std::size_t deployment_index(const DeploymentConfig& d) const { return &d - deployments.data(); }

  std::unordered_map<std::string, std::size_t> deployment_by_name;  // filled by the loader
};

/// Looks up an environment variable; injectable for tests.
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;
EnvLookup process_env();

struct LoadResult {
  std::shared_ptr<const Config> config;  // null when errors is not empty
  std::vector<std::string> errors;       // each "file:line:col: key.path: message"
  bool ok() const { return config != nullptr; }
};

/// Loads and validates a YAML file. Thread: any. Never throws; every problem is in `errors`.
LoadResult load_file(const std::string& path, const EnvLookup& env = process_env());

/// Same, from text (`source_name` is used in messages).
LoadResult load_string(const std::string& yaml, const std::string& source_name,
                       const EnvLookup& env = process_env());

/// "10s", "250ms", "1m", "2h" -> milliseconds. nullopt when malformed.
std::optional<Millis> parse_duration(std::string_view text);
/// "8MiB", "512KiB", "1GiB", "1000", "10KB", "2MB" -> bytes. nullopt when malformed.
std::optional<std::size_t> parse_size(std::string_view text);

}  // namespace tollgate::config

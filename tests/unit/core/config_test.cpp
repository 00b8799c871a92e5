#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include <fstream>

#include "tollgate/config/config.hpp"

using namespace tollgate::config;
using ::testing::ElementsAre;

namespace {

EnvLookup fake_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    if (name == "AOAI_KEY") return std::string("secret-key-value");
    return std::nullopt;
  };
}

constexpr const char* kGood = R"(server:
  listen:
    - address: 127.0.0.1:8080
  workers: 2
  limits: {max_request_body: 1MiB, header_timeout: 5s, idle_timeout: 30s}
admin:
  address: 127.0.0.1:0
backends:
  - name: aoai-eastus
    endpoint: https://example-eastus.openai.azure.com/
    deployment: gpt-4o-prod
    api_key: env:AOAI_KEY
    timeouts: {connect: 2s, first_byte: 30s, idle_between_chunks: 10s}
  - name: local
    endpoint: http://127.0.0.1:9999/base
    deployment: my deployment
    api_key: env:AOAI_KEY
deployments:
  - name: gpt-4o
    model: gpt-4o
    pools:
      - backends: [aoai-eastus]
      - backends: [local]
logging: {level: debug, access_log: stdout, format: json}
auth: {allow_anonymous: true}
)";

TEST(ConfigTest, LoadsAGoodFile) {
  auto r = load_string(kGood, "good.yaml", fake_env());
  ASSERT_TRUE(r.ok()) << (r.errors.empty() ? "" : r.errors.front());
  const auto& c = *r.config;
  ASSERT_EQ(c.server.listen.size(), 1u);
  EXPECT_EQ(c.server.listen[0].host, "127.0.0.1");
  EXPECT_EQ(c.server.listen[0].port, 8080);
  EXPECT_EQ(c.server.workers, 2u);
  EXPECT_EQ(c.server.limits.max_request_body, 1u << 20);
  EXPECT_EQ(c.server.limits.header_timeout, Millis(5000));
  EXPECT_EQ(c.admin.port, 0);
  ASSERT_EQ(c.backends.size(), 2u);
  const auto& b = c.backends[0];
  EXPECT_TRUE(b.endpoint.tls);
  EXPECT_EQ(b.endpoint.host, "example-eastus.openai.azure.com");
  EXPECT_EQ(b.endpoint.port, 443);
  EXPECT_EQ(b.endpoint.host_header, "example-eastus.openai.azure.com");
  EXPECT_EQ(b.endpoint.base_path, "");
  EXPECT_EQ(b.api_key, "secret-key-value");
  EXPECT_EQ(b.timeouts.first_byte, Millis(30000));
  EXPECT_EQ(c.backends[1].endpoint.base_path, "/base");
  EXPECT_EQ(c.backends[1].endpoint.host_header, "127.0.0.1:9999");
  const auto* d = c.find_deployment("gpt-4o");
  ASSERT_NE(d, nullptr);
  ASSERT_EQ(d->pools.size(), 2u);
  EXPECT_EQ(d->pools[1].backends.front(), 1u);
  EXPECT_EQ(c.find_deployment("nope"), nullptr);
  EXPECT_EQ(c.logging.level, "debug");
}

TEST(ConfigTest, ReportsEveryErrorWithFileLineColumnAndKey) {
  constexpr const char* kBad = R"(server:
  listen:
    - address: 127.0.0.1:99999
  workers: 0
  limits: {max_request_body: lots}
  lisen: []
backends:
  - name: a
    endpoint: ftp://x
    deployment: d
    api_key: sk-literal-secret
  - name: a
    endpoint: http://h
    deployment: d
    api_key: env:MISSING_VAR
    timeouts: {connect: 5}
deployments:
  - name: gpt
    pools:
      - backends: [a, nope]
    modle: x
logging: {level: loud}
)";
  auto r = load_string(kBad, "bad.yaml", fake_env());
  EXPECT_FALSE(r.ok());
  EXPECT_THAT(
      r.errors,
      ElementsAre(
          "bad.yaml:6:3: server: unknown key \"lisen\" (did you mean \"listen\"?)",
          "bad.yaml:3:16: server.listen[0].address: port must be a number from 0 to 65535 (got "
          "\"99999\")",
          "bad.yaml:4:12: server.workers: must be between 1 and 256 (got 0)",
          "bad.yaml:5:30: server.limits.max_request_body: must be a positive size like 512KiB, "
          "8MiB (got \"lots\")",
          "bad.yaml:9:15: backends[0].endpoint: must be an http:// or https:// URL (got "
          "\"ftp://x\")",
          "bad.yaml:11:14: backends[0].api_key: secrets must be a reference, env:NAME or "
          "file:/path (literal secrets are not allowed in the config file)",
          "bad.yaml:12:11: backends[1].name: duplicate backend name \"a\"",
          "bad.yaml:15:14: backends[1].api_key: environment variable MISSING_VAR is not set or "
          "empty",
          "bad.yaml:16:25: backends[1].timeouts.connect: must be a positive duration like 250ms, "
          "10s, 5m (got \"5\")",
          "bad.yaml:21:5: deployments[0]: unknown key \"modle\" (did you mean \"model\"?)",
          "bad.yaml:20:23: deployments[0].pools[0].backends[1]: unknown backend \"nope\"",
          "bad.yaml:22:18: logging.level: must be one of trace, debug, info, warn, error, off (got "
          "\"loud\")"));
  for (const auto& e : r.errors) EXPECT_EQ(e.find("sk-literal-secret"), std::string::npos) << e;
}

TEST(ConfigTest, DuplicateKeysAreErrors) {
  auto r = load_string(R"(server:
  listen: [{address: "127.0.0.1:0"}]
  workers: 2
  workers: 4
backends: [{name: a, endpoint: "http://h", deployment: d, api_key: env:AOAI_KEY, timeouts: {connect: 1s, connect: 2s}}]
deployments: [{name: d, pools: [{backends: [a]}]}]
auth: {allow_anonymous: true}
)",
                       "dup.yaml", fake_env());
  EXPECT_THAT(r.errors, ElementsAre("dup.yaml:4:3: server: duplicate key \"workers\"",
                                    "dup.yaml:5:106: backends[0].timeouts: duplicate key \"connect\""));
}

TEST(ConfigTest, SyntaxErrorsHavePositions) {
  auto r = load_string("server: {listen: [\n", "broken.yaml", fake_env());
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].rfind("broken.yaml:", 0), 0u);
  EXPECT_NE(r.errors[0].find("YAML syntax error"), std::string::npos);
}

TEST(ConfigTest, MissingSectionsAreNamed) {
  auto r = load_string("logging: {level: info}\n", "empty.yaml", fake_env());
  EXPECT_THAT(r.errors, ElementsAre("empty.yaml:1:1: (root): missing required key \"server\"",
                                    "empty.yaml:1:1: (root): missing required key \"backends\"",
                                    "empty.yaml:1:1: (root): missing required key \"deployments\""));
}

TEST(ConfigTest, FileSecretsAreReadAndTrimmed) {
  auto path = ::testing::TempDir() + "tollgate-secret.txt";
  {
    std::ofstream(path) << "from-file\n";
  }
  std::string yaml = kGood;
  auto pos = yaml.find("env:AOAI_KEY");
  yaml.replace(pos, 12, "file:" + path);
  auto r = load_string(yaml, "f.yaml", fake_env());
  ASSERT_TRUE(r.ok()) << r.errors.front();
  EXPECT_EQ(r.config->backends[0].api_key, "from-file");
}

TEST(ConfigTest, UnreadableFileIsAnError) {
  auto r = load_file("/nonexistent/tollgate.yaml", fake_env());
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0], "/nonexistent/tollgate.yaml:1:1: (root): cannot read the configuration file");
}

TEST(ConfigTest, ParsesDurationsAndSizes) {
  EXPECT_EQ(parse_duration("250ms"), Millis(250));
  EXPECT_EQ(parse_duration("10s"), Millis(10000));
  EXPECT_EQ(parse_duration("2m"), Millis(120000));
  EXPECT_EQ(parse_duration("1h"), Millis(3600000));
  EXPECT_FALSE(parse_duration("10"));
  EXPECT_FALSE(parse_duration("s"));
  EXPECT_FALSE(parse_duration("-1s"));
  EXPECT_EQ(parse_size("8MiB"), 8u << 20);
  EXPECT_EQ(parse_size("512KiB"), 512u << 10);
  EXPECT_EQ(parse_size("1000"), 1000u);
  EXPECT_EQ(parse_size("2MB"), 2000000u);
  EXPECT_FALSE(parse_size("1TiB"));
  EXPECT_FALSE(parse_size("99999999999999GiB"));
}

}  // namespace

namespace {

constexpr const char* kRouting = R"(server: {listen: [{address: "127.0.0.1:0"}]}
backends:
  - {name: ptu, endpoint: "http://a", deployment: d, api_key: env:AOAI_KEY, region: eastus,
     max_in_flight: 8,
     health_check: {path: /_health, interval: 2s, timeout: 500ms, rise: 1, fall: 2}}
  - {name: east, endpoint: "http://b", deployment: d, api_key: env:AOAI_KEY, region: eastus,
     health_check: {type: tcp}}
  - {name: west, endpoint: "http://c", deployment: d, api_key: env:AOAI_KEY, region: westeurope}
deployments:
  - name: gpt-4o
    regions: [eastus]
    retry: {max_attempts: 2}
    pools:
      - backends: [ptu]
      - backends: [east, {name: west, weight: 3}]
  - name: files
    pools: [{backends: [east]}]
retry: {max_attempts: 4, deadline: 30s, budget: 0.5, min_retries: 2}
routing:
  cooldown: {default: 3s, min: 50ms, max: 2m}
  breaker: {failures: 2, open: 1s, max_open: 1m}
  affinity: {max_entries: 500, ttl: 1h, deployment: files}
  pin_header: X-Tollgate-Pin-Backend
auth: {allow_anonymous: true}
)";

}  // namespace

TEST(ConfigTest, LoadsRoutingKeys) {
  auto r = load_string(kRouting, "routing.yaml", fake_env());
  ASSERT_TRUE(r.ok()) << (r.errors.empty() ? "" : r.errors.front());
  const auto& c = *r.config;
  EXPECT_EQ(c.backends[0].region, "eastus");
  EXPECT_EQ(c.backends[0].max_in_flight, 8u);
  ASSERT_TRUE(c.backends[0].health_check);
  EXPECT_FALSE(c.backends[0].health_check->tcp);
  EXPECT_EQ(c.backends[0].health_check->path, "/_health");
  EXPECT_EQ(c.backends[0].health_check->interval, Millis(2000));
  EXPECT_EQ(c.backends[0].health_check->fall, 2u);
  ASSERT_TRUE(c.backends[1].health_check);
  EXPECT_TRUE(c.backends[1].health_check->tcp);
  EXPECT_EQ(c.backends[1].health_check->rise, 2u);  // default
  EXPECT_FALSE(c.backends[2].health_check);
  const auto& d = c.deployments[0];
  EXPECT_THAT(d.regions, ElementsAre("eastus"));
  EXPECT_THAT(d.pools[1].backends, ElementsAre(1u, 2u));
  EXPECT_THAT(d.pools[1].weights, ElementsAre(1u, 3u));
  EXPECT_EQ(d.retry.max_attempts, 2u);             // overridden
  EXPECT_EQ(d.retry.deadline, Millis(30'000));     // from the top level
  EXPECT_DOUBLE_EQ(d.retry.budget, 0.5);
  EXPECT_EQ(c.deployments[1].retry.max_attempts, 4u);
  EXPECT_EQ(c.routing.cooldown_default, Millis(3000));
  EXPECT_EQ(c.routing.cooldown_min, Millis(50));
  EXPECT_EQ(c.routing.cooldown_max, Millis(120'000));
  EXPECT_EQ(c.routing.breaker_failures, 2u);
  EXPECT_EQ(c.routing.breaker_max_open, Millis(60'000));
  EXPECT_EQ(c.routing.affinity_max_entries, 500u);
  EXPECT_EQ(c.routing.affinity_deployment, 1u);
  EXPECT_EQ(c.routing.pin_header, "x-tollgate-pin-backend");
}

TEST(ConfigTest, RoutingErrorsNameTheKey) {
  constexpr const char* kBad = R"(server: {listen: [{address: "127.0.0.1:0"}]}
backends:
  - {name: a, endpoint: "http://a", deployment: d, api_key: env:AOAI_KEY, region: eastus,
     health_check: {type: udp, rise: 0}}
deployments:
  - name: x
    regions: [westus]
    retry: {max_attempts: 0, budget: 1.5}
    pools:
      - backends: [a, {name: a, weight: 0}, {nam: a}]
retry: {deadline: soon}
routing:
  cooldown: {min: 2s, max: 1s}
  affinity: {deployment: nope}
)";
  auto r = load_string(kBad, "bad.yaml", fake_env());
  EXPECT_FALSE(r.ok());
  EXPECT_THAT(
      r.errors,
      ElementsAre(
          "bad.yaml:11:19: retry.deadline: must be a positive duration like 250ms, 10s, 5m (got "
          "\"soon\")",
          "bad.yaml:4:27: backends[0].health_check.type: must be http or tcp (got \"udp\")",
          "bad.yaml:4:38: backends[0].health_check.rise: must be between 1 and 100 (got 0)",
          "bad.yaml:8:27: deployments[0].retry.max_attempts: must be between 1 and 10 (got 0)",
          "bad.yaml:8:38: deployments[0].retry.budget: must be a number from 0 to 1 (got \"1.5\")",
          "bad.yaml:10:41: deployments[0].pools[0].backends[1].weight: must be between 1 and "
          "10000 (got 0)",
          "bad.yaml:10:23: deployments[0].pools[0].backends[1]: backend \"a\" is listed twice in "
          "this deployment",
          "bad.yaml:10:46: deployments[0].pools[0].backends[2]: unknown key \"nam\" (did you mean "
          "\"name\"?)",
          "bad.yaml:10:45: deployments[0].pools[0].backends[2]: missing required key \"name\"",
          "bad.yaml:7:14: deployments[0].regions: no backend of this deployment is in one of "
          "these regions (set backends[].region)",
          "bad.yaml:13:13: routing.cooldown: min must not exceed max",
          "bad.yaml:14:26: routing.affinity.deployment: unknown deployment \"nope\""));
}

TEST(ConfigTest, IdentityErrorsNameTheKey) {
  constexpr const char* kBad = R"(server: {listen: [{address: "127.0.0.1:0"}]}
admin: {address: "0.0.0.0:9090", allow_unauthenticated: true}
backends:
  - name: a
    endpoint: "http://a"
    deployment: d
    entra: {tenant_id: t, client_id: c, client_secret: env:AOAI_KEY, token_endpoint: "http://login.example/token"}
deployments:
  - {name: x, pools: [{backends: [a]}]}
tenants: [{name: none}]
clients:
  - {name: unauthenticated, keys: [plain-text-key], deployments: [nope]}
auth:
  jwt:
    - {issuer: "https://i", audiences: [a], jwks: "http://idp.example/keys"}
    - {issuer: "https://i", audiences: [a], jwks: "https://idp.example/keys"}
)";
  auto r = load_string(kBad, "bad.yaml", fake_env());
  EXPECT_FALSE(r.ok());
  auto has = [&](std::string_view needle) {
    for (const auto& e : r.errors) {
      if (e.find(needle) != std::string::npos) return true;
    }
    return false;
  };
  EXPECT_TRUE(has("bad.yaml:2:57: admin.allow_unauthenticated: only allowed when admin.address is a loopback"))
      << ::testing::PrintToString(r.errors);
  EXPECT_TRUE(has("backends[0].entra.token_endpoint: must be an https:// URL (http:// only to a loopback address)"));
  EXPECT_TRUE(has("tenants[0].name: \"none\" is reserved"));
  EXPECT_TRUE(has("clients[0].name: \"unauthenticated\" is reserved"));
  EXPECT_TRUE(has("clients[0].keys[0]: keys must be sha256:<hex>, env:NAME or file:/path"));
  EXPECT_TRUE(has("clients[0].deployments[0]: unknown deployment \"nope\""));
  EXPECT_TRUE(has("auth.jwt[0].jwks: must be an https:// URL (http:// only to a loopback address)"));
  EXPECT_TRUE(has("auth.jwt[1].issuer: duplicate issuer \"https://i\""));
  for (const auto& e : r.errors) EXPECT_EQ(e.find("plain-text-key"), std::string::npos) << e;
  for (const auto& e : r.errors) EXPECT_EQ(e.find("secret-key-value"), std::string::npos) << e;
}

TEST(ConfigTest, LoadsBudgetsPricesAndTheLedger) {
  std::string yaml = std::string(kGood) + R"(usage: {ledger: /tmp/usage.db, flush_interval: 50ms, batch_size: 10, max_buffered: 500}
tenants:
  - {name: mkt, limits: {tokens_per_minute: 1000, budget: {usd_per_month: 2000}}}
clients:
  - name: bot
    tenant: mkt
    keys: [env:AOAI_KEY]
    deployments: ["*"]
    limits: {budget: {tokens_per_day: 2000000, usd_per_month: 500, warn_at: 0.9}}
)";
  // The deployment's price table.
  auto pos = yaml.find("    model: gpt-4o\n");
  yaml.insert(pos, "    price: {prompt_per_1k: 0.0025, completion_per_1k: 0.01}\n");
  auto r = load_string(yaml, "budgets.yaml", fake_env());
  ASSERT_TRUE(r.ok()) << ::testing::PrintToString(r.errors);
  const auto& c = *r.config;
  EXPECT_EQ(c.usage.ledger, "/tmp/usage.db");
  EXPECT_EQ(c.usage.flush_interval, Millis(50));
  EXPECT_EQ(c.usage.batch_size, 10u);
  EXPECT_EQ(c.usage.max_buffered, 500u);
  EXPECT_DOUBLE_EQ(c.tenants[0].limits.budget.usd_per_month, 2000);
  EXPECT_DOUBLE_EQ(c.tenants[0].limits.budget.warn_at, 0.8);
  EXPECT_EQ(c.clients[0].limits.budget.tokens_per_day, 2000000);
  EXPECT_DOUBLE_EQ(c.clients[0].limits.budget.warn_at, 0.9);
  const auto& price = c.deployments[0].price;
  EXPECT_TRUE(price.set);
  EXPECT_DOUBLE_EQ(price.cached_prompt_per_1k, 0.0025);  // defaults to the prompt price
  EXPECT_DOUBLE_EQ(price.reasoning_per_1k, 0.01);        // and to the completion price
}

TEST(ConfigTest, BudgetAndLedgerErrorsNameTheKey) {
  constexpr const char* kBad = R"(server: {listen: [{address: "127.0.0.1:0"}]}
backends: [{name: a, endpoint: "http://127.0.0.1:1", deployment: d, api_key: env:AOAI_KEY}]
deployments:
  - {name: x, pools: [{backends: [a]}], price: {prompt_per_1k: -1, completion_per_1k: 0.01}, limits: {budget: {tokens_per_day: 5}}}
tenants: [{name: t, limits: {budget: {warn_at: 0.5}}}]
clients:
  - {name: c, keys: [env:AOAI_KEY], deployments: [x], limits: {budget: {usd_per_day: abc, tokens_per_month: 0}}}
usage: {ledger: /nonexistent-dir/usage.db, batch_size: 0}
)";
  auto r = load_string(kBad, "bad.yaml", fake_env());
  EXPECT_FALSE(r.ok());
  auto has = [&](std::string_view needle) {
    for (const auto& e : r.errors) {
      if (e.find(needle) != std::string::npos) return true;
    }
    return false;
  };
  EXPECT_TRUE(has("deployments[0].price.prompt_per_1k: must be a price in USD per 1,000 tokens"))
      << ::testing::PrintToString(r.errors);
  EXPECT_TRUE(has("deployments[0].limits: unknown key \"budget\"")) << ::testing::PrintToString(r.errors);
  EXPECT_TRUE(has("tenants[0].limits.budget: names no budget"));
  EXPECT_TRUE(has("clients[0].limits.budget.usd_per_day: must be a positive amount in USD (got \"abc\")"));
  EXPECT_TRUE(has("clients[0].limits.budget.tokens_per_month: must be between 1 and"));
  EXPECT_TRUE(has("bad.yaml:8:17: usage.ledger: directory /nonexistent-dir does not exist"))
      << ::testing::PrintToString(r.errors);
  EXPECT_TRUE(has("usage.batch_size: must be between 1 and"));
}

TEST(ConfigTest, LoadsPriorityClassesAndTierReservations) {
  std::string yaml = std::string(kGood) + R"(priority:
  classes:
    - {name: high, max_queue_wait: 10s, queue_limit: 1000}
    - {name: normal, max_queue_wait: 5s}
    - {name: low, max_queue_wait: 30s, queue_limit: 5000}
  header: X-Tollgate-Priority
  timeout_headers: [x-ms-client-request-timeout, x-stainless-timeout]
clients:
  - {name: ui, keys: [env:AOAI_KEY], deployments: ["*"], priority: high, weight: 2}
)";
  auto pos = yaml.find("      - backends: [aoai-eastus]\n");
  yaml.replace(pos, std::string("      - backends: [aoai-eastus]\n").size(),
               "      - {backends: [aoai-eastus], classes: [high, normal], spare: {classes: [low], max_utilization: 0.6}}\n");
  auto r = load_string(yaml, "prio.yaml", fake_env());
  ASSERT_TRUE(r.ok()) << ::testing::PrintToString(r.errors);
  const auto& p = r.config->priority;
  ASSERT_EQ(p.classes.size(), 3u);
  EXPECT_EQ(p.classes[2].max_queue_wait, Millis(30'000));
  EXPECT_EQ(p.classes[1].queue_limit, 1000u);
  EXPECT_EQ(p.default_class, 1u);
  EXPECT_EQ(p.header, "x-tollgate-priority");
  EXPECT_EQ(p.timeout_headers.size(), 2u);
  EXPECT_EQ(r.config->clients[0].priority, std::optional<std::size_t>(0));
  EXPECT_DOUBLE_EQ(r.config->clients[0].weight, 2);
  const auto& pool = r.config->deployments[0].pools[0];
  EXPECT_TRUE(pool.allows(0));
  EXPECT_FALSE(pool.allows(2));
  EXPECT_TRUE(pool.spare_for(2));
  EXPECT_DOUBLE_EQ(pool.spare_max_utilization, 0.6);
  EXPECT_TRUE(r.config->deployments[0].pools[1].allows(2));  // no classes: everyone
}

TEST(ConfigTest, WithoutPriorityThreeClassesThatNeverWait) {
  auto r = load_string(kGood, "good.yaml", fake_env());
  ASSERT_TRUE(r.ok());
  const auto& p = r.config->priority;
  ASSERT_EQ(p.classes.size(), 3u);
  EXPECT_EQ(p.classes[0].name, "high");
  EXPECT_EQ(p.classes[1].max_queue_wait, Millis(0));
  EXPECT_EQ(p.default_class, 1u);
}

TEST(ConfigTest, PriorityErrorsNameTheKey) {
  constexpr const char* kBad = R"(server: {listen: [{address: "127.0.0.1:0"}]}
backends: [{name: a, endpoint: "http://127.0.0.1:1", deployment: d, api_key: env:AOAI_KEY}]
priority:
  classes: [{name: gold, max_queue_wait: forever}, {name: gold}]
  default: silver
deployments:
  - {name: x, pools: [{backends: [a], classes: [bronze], spare: {classes: [gold]}}]}
clients:
  - {name: c, keys: [env:AOAI_KEY], deployments: [x], priority: platinum, weight: 0}
)";
  auto r = load_string(kBad, "bad.yaml", fake_env());
  EXPECT_FALSE(r.ok());
  auto has = [&](std::string_view needle) {
    for (const auto& e : r.errors) {
      if (e.find(needle) != std::string::npos) return true;
    }
    return false;
  };
  EXPECT_TRUE(has("bad.yaml:4:42: priority.classes[0].max_queue_wait: must be a duration from 0 to 10m"))
      << ::testing::PrintToString(r.errors);
  EXPECT_TRUE(has("priority.classes[1].name: duplicate priority class \"gold\""));
  EXPECT_TRUE(has("priority.default: unknown priority class \"silver\""));
  EXPECT_TRUE(has("deployments[0].pools[0].classes[0]: unknown priority class \"bronze\""));
  EXPECT_TRUE(has("deployments[0].pools[0].spare: missing required key \"max_utilization\""));
  EXPECT_TRUE(has("clients[0].priority: unknown priority class \"platinum\""));
  EXPECT_TRUE(has("clients[0].weight: must be a number from 0.01 to 1000"));
}

TEST(ConfigTest, LoadsTheCluster) {
  auto env = [](const std::string& name) -> std::optional<std::string> {
    if (name == "AOAI_KEY") return std::string("secret-key-value");
    if (name == "REDIS_PW") return std::string("redis-secret");
    if (name == "REDIS_URL") return std::string("rediss://ops:url-secret@[::1]:6380/3");
    return std::nullopt;
  };
  auto r = load_string(std::string(kGood) + R"(cluster:
  redis: {url: "redis://ops@redis.internal/2", password: env:REDIS_PW, key_prefix: "tg-prod:", timeout: 80ms}
  on_failure: deny
)", "cluster.yaml", env);
  ASSERT_TRUE(r.ok()) << ::testing::PrintToString(r.errors);
  const auto& c = r.config->cluster;
  EXPECT_TRUE(c.enabled());
  EXPECT_EQ(c.redis.host, "redis.internal");
  EXPECT_EQ(c.redis.port, 6379);
  EXPECT_EQ(c.redis.db, 2u);
  EXPECT_EQ(c.redis.user, "ops");
  EXPECT_EQ(c.redis.password, "redis-secret");
  EXPECT_FALSE(c.redis.tls);
  EXPECT_EQ(display_url(c.redis), "redis://ops@redis.internal:6379/2");
  EXPECT_EQ(c.key_prefix, "tg-prod:");
  EXPECT_EQ(c.timeout, Millis(80));
  EXPECT_EQ(c.on_failure, ClusterFailure::kDeny);

  auto from_env = load_string(std::string(kGood) + "cluster: {redis: {url: env:REDIS_URL}}\n", "c.yaml", env);
  ASSERT_TRUE(from_env.ok()) << ::testing::PrintToString(from_env.errors);
  const auto& a = from_env.config->cluster.redis;
  EXPECT_EQ(a.host, "::1");
  EXPECT_EQ(a.port, 6380);
  EXPECT_EQ(a.db, 3u);
  EXPECT_TRUE(a.tls);
  EXPECT_EQ(a.password, "url-secret");
  EXPECT_EQ(display_url(a).find("url-secret"), std::string::npos) << display_url(a);
  EXPECT_EQ(from_env.config->cluster.on_failure, ClusterFailure::kLocal);

  auto none = load_string(kGood, "none.yaml", env);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none.config->cluster.enabled());
}

TEST(ConfigTest, ClusterErrorsNameTheKey) {
  auto env = [](const std::string& name) -> std::optional<std::string> {
    if (name == "AOAI_KEY") return std::string("secret-key-value");
    if (name == "PW") return std::string("pw");
    return std::nullopt;
  };
  auto errors = [&](const std::string& cluster) {
    return load_string(std::string(kGood) + cluster, "c.yaml", env).errors;
  };
  auto has = [](const std::vector<std::string>& errs, std::string_view needle) {
    for (const auto& e : errs) {
      if (e.find(needle) != std::string::npos) return true;
    }
    return false;
  };
  auto e = errors("cluster: {redis: {url: \"redis://u:literal-pw@h:6379/0\"}}\n");
  EXPECT_TRUE(has(e, "c.yaml:26:24: cluster.redis.url: must not carry a password")) << ::testing::PrintToString(e);
  for (const auto& m : e) EXPECT_EQ(m.find("literal-pw"), std::string::npos) << m;
  EXPECT_TRUE(has(errors("cluster: {redis: {url: \"http://h\"}}\n"), "cluster.redis.url: scheme must be redis:// or rediss://"));
  EXPECT_TRUE(has(errors("cluster: {redis: {url: \"redis://h:0\"}}\n"), "cluster.redis.url: port must be a number from 1 to 65535"));
  EXPECT_TRUE(has(errors("cluster: {redis: {url: \"redis://h/abc\"}}\n"), "cluster.redis.url: db must be a number after the host"));
  EXPECT_TRUE(has(errors("cluster: {redis: {url: env:NOPE}}\n"), "cluster.redis.url: environment variable NOPE is not set"));
  EXPECT_TRUE(has(errors("cluster: {redis: {url: \"redis://h\", password: plain}}\n"), "cluster.redis.password: secrets must be a reference"));
  EXPECT_TRUE(has(errors("cluster: {on_failure: local}\n"), "cluster: missing required key \"redis\""));
  EXPECT_TRUE(has(errors("cluster: {redis: {timeout: 5ms}}\n"), "cluster.redis: missing required key \"url\""));
  EXPECT_TRUE(has(errors("cluster: {redis: {url: \"redis://h\", timout: 5ms}}\n"), "unknown key \"timout\""));
  EXPECT_TRUE(has(errors("cluster: {redis: {url: \"redis://ops@h\"}}\n"), "cluster.redis.url: names user 'ops' but no password"));
  EXPECT_TRUE(has(errors("cluster: {redis: {url: \"redis://h\"}, on_failure: open}\n"), "cluster.on_failure: must be local or deny (got \"open\")"));
}

TEST(ConfigTest, LoadsTheFleetLedger) {
  auto dir = std::filesystem::temp_directory_path();
  auto env = [](const std::string& name) -> std::optional<std::string> {
    if (name == "AOAI_KEY") return std::string("secret-key-value");
    if (name == "PG_URL") return std::string("postgresql://tg:pg-secret@db.internal:6432/ledger?sslmode=require");
    return std::nullopt;
  };
  std::string good(kGood);
  good.replace(good.find("  workers: 2\n"), 13, "  workers: 2\n  replica_name: eu-1\n");
  auto r = load_string(good + "usage:\n  ledger: " + (dir / "usage.db").string() +
                           "\n  postgres: {url: env:PG_URL, table: billing.usage, batch_size: 500, "
                           "flush_interval: 250ms, max_backlog: 1000, timeout: 2s}\n",
                       "fleet.yaml", env);
  ASSERT_TRUE(r.ok()) << ::testing::PrintToString(r.errors);
  const auto& pg = r.config->usage.postgres;
  ASSERT_TRUE(pg.has_value());
  EXPECT_EQ(pg->url, "postgresql://tg:pg-secret@db.internal:6432/ledger?sslmode=require");
  EXPECT_EQ(pg->where.find("pg-secret"), std::string::npos) << pg->where;
  EXPECT_NE(pg->where.find("db.internal:6432/ledger"), std::string::npos) << pg->where;
  EXPECT_EQ(pg->table, "billing.usage");
  EXPECT_EQ(pg->batch_size, 500u);
  EXPECT_EQ(pg->flush_interval, Millis(250));
  EXPECT_EQ(pg->max_backlog, 1000u);
  EXPECT_EQ(pg->timeout, Millis(2000));
  EXPECT_EQ(r.config->server.replica_name, "eu-1");

  auto literal = load_string(std::string(kGood) + "usage:\n  ledger: " + (dir / "u.db").string() +
                                 "\n  postgres: {url: \"postgres://tg@127.0.0.1/x\"}\n",
                             "lit.yaml", env);
  ASSERT_TRUE(literal.ok()) << ::testing::PrintToString(literal.errors);
  EXPECT_EQ(literal.config->usage.postgres->table, "tollgate_usage");
  EXPECT_EQ(literal.config->usage.postgres->batch_size, 1000u);
  EXPECT_EQ(literal.config->usage.postgres->timeout, Millis(5000));
  EXPECT_FALSE(literal.config->server.replica_name.empty());  // the host name by default
  EXPECT_FALSE(load_string(kGood, "none.yaml", env).config->usage.postgres.has_value());
}

TEST(ConfigTest, FleetLedgerErrorsNameTheKey) {
  auto env = [](const std::string& name) -> std::optional<std::string> {
    if (name == "AOAI_KEY") return std::string("secret-key-value");
    return std::nullopt;
  };
  auto spool = (std::filesystem::temp_directory_path() / "usage.db").string();
  auto errors = [&](const std::string& postgres, bool with_ledger = true) {
    std::string usage = "usage:\n" + (with_ledger ? "  ledger: " + spool + "\n" : std::string()) +
                        "  postgres: " + postgres + "\n";
    return load_string(std::string(kGood) + usage, "f.yaml", env).errors;
  };
  auto has = [](const std::vector<std::string>& errs, std::string_view needle) {
    for (const auto& e : errs) {
      if (e.find(needle) != std::string::npos) return true;
    }
    return false;
  };
  auto e = errors("{url: \"postgresql://tg:literal-pw@h/db\"}");
  EXPECT_TRUE(has(e, "usage.postgres.url: must not carry a password")) << ::testing::PrintToString(e);
  for (const auto& m : e) EXPECT_EQ(m.find("literal-pw"), std::string::npos) << m;
  EXPECT_TRUE(has(errors("{url: \"mysql://h/db\"}"), "usage.postgres.url: must be a postgresql:// URL (got scheme \"mysql\")"));
  EXPECT_TRUE(has(errors("{url: \"postgresql://[bad\"}"), "usage.postgres.url: must be a postgresql:// URL"));
  EXPECT_TRUE(has(errors("{url: env:NOPE}"), "usage.postgres.url: environment variable NOPE is not set"));
  EXPECT_TRUE(has(errors("{table: x}"), "usage.postgres: missing required key \"url\""));
  EXPECT_TRUE(has(errors("{url: \"postgresql://h/db\", table: \"Usage; DROP\"}"), "usage.postgres.table: must be a lower-case SQL name"));
  EXPECT_TRUE(has(errors("{url: \"postgresql://h/db\", batch_size: 5000}"), "usage.postgres.batch_size"));
  EXPECT_TRUE(has(errors("{url: \"postgresql://h/db\"}", false), "usage.postgres: needs usage.ledger"));
}

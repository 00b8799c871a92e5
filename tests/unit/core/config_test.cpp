#include <gmock/gmock.h>
#include <gtest/gtest.h>

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

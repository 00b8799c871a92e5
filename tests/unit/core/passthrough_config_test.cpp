#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tollgate/config/config.hpp"

using namespace tollgate::config;
using ::testing::ElementsAre;

namespace {

EnvLookup fake_env() {
  return [](const std::string&) -> std::optional<std::string> { return std::string("k"); };
}

TEST(PassthroughConfigTest, OperationPathsAreLowerCasedWithoutOuterSlashes) {
  auto r = load_string(R"(server: {listen: [{address: "127.0.0.1:0"}]}
backends: [{name: a, endpoint: "http://127.0.0.1:1", deployment: d, api_key: env:K}]
deployments:
  - {name: x, pools: [{backends: [a]}], passthrough: [Audio/Transcriptions, /images/generations/]}
  - {name: y, pools: [{backends: [a]}]}
auth: {allow_anonymous: true}
)",
                       "ok.yaml", fake_env());
  ASSERT_TRUE(r.ok()) << (r.errors.empty() ? "" : r.errors[0]);
  EXPECT_THAT(r.config->deployments[0].passthrough,
              ElementsAre("audio/transcriptions", "images/generations"));
  EXPECT_TRUE(r.config->deployments[1].passthrough.empty());
}

TEST(PassthroughConfigTest, ErrorsNameFileLineAndEntry) {
  auto r = load_string(R"(server: {listen: [{address: "127.0.0.1:0"}]}
backends: [{name: a, endpoint: "http://127.0.0.1:1", deployment: d, api_key: env:K}]
deployments:
  - name: x
    pools: [{backends: [a]}]
    passthrough: [audio/transcriptions, "audio//x", "a/../b", "x;y", "%2e"]
)",
                       "bad.yaml", fake_env());
  EXPECT_FALSE(r.ok());
  EXPECT_THAT(r.errors,
              ElementsAre("bad.yaml:6:41: deployments[0].passthrough[1]: must be an operation path "
                          "such as audio/transcriptions (got \"audio//x\")",
                          "bad.yaml:6:53: deployments[0].passthrough[2]: must be an operation path "
                          "such as audio/transcriptions (got \"a/../b\")",
                          "bad.yaml:6:63: deployments[0].passthrough[3]: must be an operation path "
                          "such as audio/transcriptions (got \"x;y\")",
                          "bad.yaml:6:70: deployments[0].passthrough[4]: must be an operation path "
                          "such as audio/transcriptions (got \"%2e\")"));
}

}  // namespace

// Issue 14: which deployments count tokens (server::counts_tokens) and which encodings a
// configuration loads (server::needed_encodings); the snapshot builder loads them, a reload
// loads what it adds, and the admit stage counts only where the rule says so.

#include <gtest/gtest.h>

#include "server/snapshot_builder.hpp"
#include "stage_env.hpp"

namespace tollgate::pipeline::testing {
namespace {

using tokenize::EncodingKind;
using tokenize::EncodingSet;

EncodingSet set_of(std::initializer_list<EncodingKind> kinds) {
  EncodingSet s;
  for (auto k : kinds) s.add(k);
  return s;
}

// Two deployments, one per encoding, a client without limits, no access log, no ledger: the
// proxy pipeline, which never counts a token. `extra` is appended (top-level keys).
std::string proxy_yaml(std::string_view deployment_extra = "", std::string_view client_extra = "",
                       std::string_view extra = "") {
  return std::string(R"(
backends:
  - {name: east, endpoint: "http://127.0.0.1:1", deployment: gpt-4o, api_key: env:AOAI_KEY}
  - {name: old, endpoint: "http://127.0.0.1:2", deployment: gpt-35-turbo, api_key: env:AOAI_KEY}
deployments:
  - {name: gpt-4o, pools: [{backends: [east]}])") +
         std::string(deployment_extra) + R"(}
  - {name: chat, model: gpt-35-turbo-0613, pools: [{backends: [old]}]}
clients:
  - {name: app, keys: [env:APP_KEY], deployments: ["*"])" +
         std::string(client_extra) + R"(}
logging: {access_log: "off"}
)" + std::string(extra);
}

std::shared_ptr<const config::Config> proxy_config(std::string_view deployment_extra = "",
                                                   std::string_view client_extra = "",
                                                   std::string_view extra = "") {
  return load_config(proxy_yaml(deployment_extra, client_extra, extra));
}

class TokenCountingTest : public StageTest {};  // sets the keys' environment variables

server::UsageRecorders recorders(const config::Config& cfg) {
  return server::UsageRecorders::of(cfg);
}

std::vector<bool> counting(const config::Config& cfg) {
  std::vector<bool> out;
  for (const auto& d : cfg.deployments)
    out.push_back(server::counts_tokens(cfg, d, recorders(cfg)));
  return out;
}

TEST_F(TokenCountingTest, TheProxyPipelineCountsNothing) {
  auto cfg = proxy_config("", ", limits: {requests_per_minute: 100, max_tokens_cap: 500}",
                          "policy: {max_n: 2, max_best_of: 2}\n");
  EXPECT_EQ(counting(*cfg), (std::vector<bool>{false, false}));
  EXPECT_TRUE(server::needed_encodings(*cfg, recorders(*cfg)).empty());
}

TEST_F(TokenCountingTest, ADeploymentsTokenLimitOrPriceCountsItsOwnRequests) {
  auto tpm = proxy_config(", limits: {tokens_per_minute: 1000}");
  EXPECT_EQ(counting(*tpm), (std::vector<bool>{true, false}));
  EXPECT_EQ(server::needed_encodings(*tpm, recorders(*tpm)), set_of({EncodingKind::kO200kBase}));
  auto priced = load_config(R"(
auth: {allow_anonymous: true}
backends:
  - {name: old, endpoint: "http://127.0.0.1:2", deployment: chat, api_key: env:AOAI_KEY}
deployments:
  - {name: chat, model: gpt-4-0613, price: {prompt_per_1k: 0.03}, pools: [{backends: [old]}]}
  - {name: mini, model: gpt-4o-mini, pools: [{backends: [old]}]}
logging: {access_log: "off"}
)");
  EXPECT_EQ(counting(*priced), (std::vector<bool>{true, false}));
  EXPECT_EQ(server::needed_encodings(*priced, recorders(*priced)),
            set_of({EncodingKind::kCl100kBase}));
}

TEST_F(TokenCountingTest, AClientsOrTenantsTokenLimitOrBudgetCountsEveryDeployment) {
  for (std::string_view limits :
       {", limits: {tokens_per_minute: 10}", ", limits: {budget: {usd_per_day: 5}}"}) {
    auto cfg = proxy_config("", limits);
    EXPECT_EQ(counting(*cfg), (std::vector<bool>{true, true})) << limits;
    EXPECT_EQ(server::needed_encodings(*cfg, recorders(*cfg)), EncodingSet::all()) << limits;
  }
  auto tenant = proxy_config("", ", tenant: t",
                             "tenants: [{name: t, limits: {budget: {tokens_per_month: 9000}}}]\n");
  EXPECT_EQ(counting(*tenant), (std::vector<bool>{true, true}));
}

TEST_F(TokenCountingTest, ALedgerOrAnAccessLogCountsEveryDeployment) {
  auto logged = load_config(R"(
auth: {allow_anonymous: true}
backends:
  - {name: east, endpoint: "http://127.0.0.1:1", deployment: gpt-4o, api_key: env:AOAI_KEY}
deployments:
  - {name: gpt-4o, pools: [{backends: [east]}]}
  - {name: custom, model: my-own-model, pools: [{backends: [east]}]}
)");  // access_log: stdout by default
  EXPECT_TRUE(recorders(*logged).access_log);
  EXPECT_EQ(counting(*logged), (std::vector<bool>{true, true}));
  // An unknown model counts with the fallback encoding.
  EXPECT_EQ(server::needed_encodings(*logged, recorders(*logged)),
            set_of({tokenize::kFallbackEncoding}));
  auto ledger = proxy_config("", "", "usage: {ledger: /tmp/never-opened.db}\n");
  EXPECT_TRUE(recorders(*ledger).ledger);
  EXPECT_FALSE(recorders(*ledger).access_log);
  EXPECT_EQ(server::needed_encodings(*ledger, recorders(*ledger)), EncodingSet::all());
}

class TokenizerLoadingTest : public StageTest {
 protected:
  std::shared_ptr<const tokenize::Tokenizers> none() {
    auto t = tokenize::Tokenizers::load(TOLLGATE_TOKENIZER_DIR, EncodingSet{});
    if (!t) throw std::runtime_error(t.error().message);
    return std::make_shared<const tokenize::Tokenizers>(std::move(t).value());
  }
  metrics::SeriesRegistry series_;
  ratelimit::BucketRegistry buckets_;
  server::SnapshotBuilder builder_{server::SnapshotSources{
      series_, buckets_,
      [](const config::BackendConfig&) { return std::make_shared<pipeline::TokenSlot>(); },
      [](routing::TimeMs) {}, std::make_shared<routing::Scheduler>(), none()}};
};

TEST_F(TokenizerLoadingTest, ABuildLoadsWhatItsConfigCountsWithAndAReloadAddsTheRest) {
  auto proxy = builder_.build(proxy_config());
  EXPECT_TRUE(proxy->tokenizers->loaded().empty());
  EXPECT_FALSE(proxy->deployments[0].counts_tokens);
  auto limited = builder_.build(proxy_config(", limits: {tokens_per_minute: 1000}"));
  EXPECT_EQ(limited->tokenizers->loaded(), set_of({EncodingKind::kO200kBase}));
  EXPECT_TRUE(limited->deployments[0].counts_tokens);
  EXPECT_FALSE(limited->deployments[1].counts_tokens);
  EXPECT_TRUE(proxy->tokenizers->loaded().empty()) << "a published snapshot never changes";
  auto both = builder_.build(proxy_config("", ", limits: {tokens_per_minute: 10}"));
  EXPECT_EQ(both->tokenizers->loaded(), EncodingSet::all());
  EXPECT_EQ(both->tokenizers->find(EncodingKind::kO200kBase),
            limited->tokenizers->find(EncodingKind::kO200kBase))
      << "loaded once, shared";
  auto back = builder_.build(proxy_config());
  EXPECT_EQ(back->tokenizers->loaded(), EncodingSet::all()) << "nothing is unloaded";
  EXPECT_FALSE(back->deployments[0].counts_tokens);
}

TEST_F(TokenizerLoadingTest, TheAccessLogAndLedgerAreTheOnesTheProcessStartedWith) {
  builder_.build(proxy_config());  // access log off: restart-only
  auto logged = builder_.build(load_config(R"(
auth: {allow_anonymous: true}
backends:
  - {name: east, endpoint: "http://127.0.0.1:1", deployment: gpt-4o, api_key: env:AOAI_KEY}
deployments: [{name: gpt-4o, pools: [{backends: [east]}]}]
usage: {ledger: /tmp/never-opened.db}
)"));
  EXPECT_FALSE(logged->deployments[0].counts_tokens);
  EXPECT_TRUE(logged->tokenizers->loaded().empty());
}

// The admit stage keeps the tokenizer for an answer without usage only where the rule counts.
TEST_F(TokenCountingTest, AdmitCountsAnswersWithoutUsageOnlyWhereTheRuleSays) {
  auto env = StageEnv::from_yaml(proxy_yaml(", limits: {tokens_per_minute: 100000}"));
  const std::string body = R"({"messages":[{"role":"user","content":"hi"}],"stream":true})";
  auto& counted =
      env.request("POST", "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
                  {{"api-key", "sk-app"}}, body);
  EXPECT_FALSE(counted.run(admit));
  EXPECT_NE(counted.ctx().tokenizers, nullptr);
  EXPECT_TRUE(counted.ctx().count_output);
  auto& not_counted =
      env.request("POST", "/openai/deployments/chat/chat/completions?api-version=2024-10-21",
                  {{"api-key", "sk-app"}}, body);
  EXPECT_FALSE(not_counted.run(admit));
  EXPECT_TRUE(not_counted.x().accounted) << "a known client's calls are still accounted";
  EXPECT_EQ(not_counted.ctx().tokenizers, nullptr);
  EXPECT_FALSE(not_counted.ctx().count_output);
}

}  // namespace
}  // namespace tollgate::pipeline::testing

// SnapshotBuilder: each generation is built from its config; the live state survives reloads.

#include "server/snapshot_builder.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "stage_env.hpp"

namespace tollgate::pipeline::testing {
namespace {

constexpr const char* kTwoBackends = R"(
auth: {allow_anonymous: true}
backends:
  - {name: east, endpoint: "http://127.0.0.1:1", deployment: gpt-4o, api_key: env:AOAI_KEY}
  - {name: west, endpoint: "http://127.0.0.1:2", deployment: gpt-4o, api_key: env:AOAI_KEY}
deployments:
  - {name: gpt-4o, pools: [{backends: [east]}, {backends: [west]}], limits: {tokens_per_minute: 100}}
)";

// The same, with west moved to another port and a deployment added.
constexpr const char* kReloaded = R"(
auth: {allow_anonymous: true}
backends:
  - {name: east, endpoint: "http://127.0.0.1:1", deployment: gpt-4o, api_key: env:AOAI_KEY}
  - {name: west, endpoint: "http://127.0.0.1:9", deployment: gpt-4o, api_key: env:AOAI_KEY}
deployments:
  - {name: mini, pools: [{backends: [east]}]}
  - {name: gpt-4o, pools: [{backends: [east]}, {backends: [west]}], limits: {tokens_per_minute: 100}}
)";

class SnapshotBuilderTest : public StageTest {
 protected:
  metrics::SeriesRegistry series_;
  ratelimit::BucketRegistry buckets_;
  server::SnapshotBuilder builder_{server::SnapshotSources{
      series_, buckets_,
      [](const config::BackendConfig&) { return std::make_shared<pipeline::TokenSlot>(); },
      [](routing::TimeMs) {}, std::make_shared<routing::Scheduler>(), nullptr}};
};

TEST_F(SnapshotBuilderTest, ARouteHasItsTiersSeriesAndLimits) {
  auto s = builder_.build(load_config(kTwoBackends));
  EXPECT_EQ(s->generation, 1u);
  ASSERT_EQ(s->deployments.size(), 1u);
  const auto& d = s->deployments[0];
  ASSERT_EQ(d.route.tiers.size(), 2u);
  EXPECT_EQ(d.route.tiers[1][0].backend, 1u);
  EXPECT_EQ(series_.labels(d.series[1]), (std::pair<std::string, std::string>{"gpt-4o", "west"}));
  EXPECT_EQ(series_.tier(d.series[1]), 1u);
  ASSERT_EQ(d.limits.size(), 1u);
  EXPECT_EQ(d.limits[0].per_minute, 100);
  EXPECT_EQ(d.limits[0].scope, ratelimit::Scope::kDeployment);
  EXPECT_EQ(s->backend_index.at("west"), 1u);
  EXPECT_EQ(s->pool_count, 2u);
}

TEST_F(SnapshotBuilderTest, AReloadKeepsTheLiveStateOfWhatStayedTheSame) {
  auto first = builder_.build(load_config(kTwoBackends));
  auto next = builder_.build(load_config(kReloaded));
  EXPECT_EQ(next->generation, 2u);
  EXPECT_EQ(next->backends[0].state, first->backends[0].state);  // east: unchanged
  EXPECT_NE(next->backends[1].state, first->backends[1].state);  // west: a new endpoint
  EXPECT_EQ(next->backends[0].pool_id, first->backends[0].pool_id);
  EXPECT_EQ(next->backends[1].pool_id, 2u);  // a new pool for the new endpoint
  EXPECT_EQ(next->pool_count, 3u);
  EXPECT_EQ(next->deployments[1].budget, first->deployments[0].budget);  // gpt-4o, by name
  EXPECT_EQ(next->deployments[1].limits[0].bucket, first->deployments[0].limits[0].bucket);
  EXPECT_EQ(next->deployments[1].series_none, first->deployments[0].series_none);
  EXPECT_EQ(next->affinity, first->affinity);
  EXPECT_EQ(next->scheduler, first->scheduler);
}

TEST_F(SnapshotBuilderTest, AnUnreadableCaFileFailsTheBuild) {
  std::string ca = ::testing::TempDir() + "snapshot_builder_test_ca.pem";
  std::ofstream(ca) << "not a certificate\n";
  auto cfg = load_config(R"(
auth: {allow_anonymous: true}
backends:
  - {name: secure, endpoint: "https://127.0.0.1:1", deployment: gpt-4o, api_key: env:AOAI_KEY, ca_file: )" +
                         ca + R"(}
deployments: [{name: gpt-4o, pools: [{backends: [secure]}]}]
)");
  try {
    builder_.build(cfg);
    ADD_FAILURE() << "built a snapshot with a bad CA file";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("backend secure: cannot load CA certificates: ", 0), 0u)
        << e.what();
  }
  std::remove(ca.c_str());
}

class BuildAuthStateTest : public StageTest {
 protected:
  std::shared_ptr<const pipeline::AuthState> build(std::string_view yaml) {
    auto cfg = load_config(std::string(kTwoBackends) + std::string(yaml));
    return server::build_auth_state(
        cfg, std::make_shared<const auth::KeyIndex>(*cfg, auth::KeysFile{}),
        std::vector<std::shared_ptr<const auth::Jwks>>(cfg->auth.jwt.size()),
        server::AuthSources{series_, buckets_, budgets_});
  }
  metrics::SeriesRegistry series_;
  ratelimit::BucketRegistry buckets_;
  ratelimit::BudgetRegistry budgets_;
};

constexpr const char* kTenantClients = R"(
tenants: [{name: contoso, limits: {requests_per_minute: 50, budget: {tokens_per_month: 9000}}}]
clients:
  - {name: app, keys: [env:APP_KEY], deployments: ["*"], tenant: contoso, limits: {tokens_per_minute: 10}}
)";

TEST_F(BuildAuthStateTest, AClientHasItsLimitsThenItsTenants) {
  auto a = build(kTenantClients);
  EXPECT_EQ(series_.client_labels(0),
            (std::pair<std::string, std::string>{"unauthenticated", "none"}));
  EXPECT_EQ(series_.client_labels(a->anonymous_series),
            (std::pair<std::string, std::string>{"anonymous", "none"}));
  EXPECT_EQ(series_.client_labels(a->client_series[0]),
            (std::pair<std::string, std::string>{"app", "contoso"}));
  ASSERT_EQ(a->client_limits[0].size(), 2u);
  EXPECT_EQ(a->client_limits[0][0].scope, ratelimit::Scope::kClient);
  EXPECT_EQ(a->client_limits[0][0].unit, ratelimit::Unit::kTokens);
  EXPECT_EQ(a->client_limits[0][1].scope, ratelimit::Scope::kTenant);
  EXPECT_EQ(a->client_limits[0][1].per_minute, 50);
  ASSERT_EQ(a->client_budgets[0].size(), 1u);
  EXPECT_EQ(a->client_budgets[0][0].period, ratelimit::Period::kMonth);
  EXPECT_EQ(a->client_budgets[0][0].limit, 9000);
  EXPECT_EQ(a->keys->find("sk-app", 0), 0u);
}

TEST_F(BuildAuthStateTest, ANewGenerationKeepsTheBucketsAndSeries) {
  auto first = build(kTenantClients);
  auto next = build(kTenantClients);
  EXPECT_EQ(next->client_limits[0][0].bucket, first->client_limits[0][0].bucket);
  EXPECT_EQ(next->client_budgets[0][0].budget, first->client_budgets[0][0].budget);
  EXPECT_EQ(next->client_series, first->client_series);
}

}  // namespace
}  // namespace tollgate::pipeline::testing

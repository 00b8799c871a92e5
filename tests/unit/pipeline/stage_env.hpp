#pragma once
// A request pipeline on a configuration written inline in the test: the real loader, the real
// snapshot and AuthState builders, a worker's statistics and a clock moved by hand. A test reads
// like a specification: the YAML, one request, one stage, the reply and the counters.
//
//   auto env = StageEnv::from_yaml(R"(...)");
//   auto& call = env.request("POST", "/v1/chat/completions", {{"api-key", "sk-app"}}, body);
//   auto reply = call.run(admit);  // the stages before admit run first and must let it through
//   EXPECT_EQ(status(reply), 429);
//
// Thread: the test's. Plain C++: no Beast, no Asio I/O.

#include <gtest/gtest.h>

#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "server/pipeline/stages.hpp"
#include "server/pipeline/snapshot.hpp"
#include "tollgate/metrics/stats.hpp"

namespace tollgate::pipeline::testing {

/// The pipeline's clock, moved by hand. Starts at 2026-03-10T23:59:00Z (a minute before a UTC
/// day ends) and at a steady time past every bucket's one-minute window.
class FakeClock final : public core::Clock {
 public:
  static constexpr core::UnixMs kStartUnixMs = 1'773'187'140'000;
  static constexpr core::Nanos kStartSteadyNs = 1'000'000'000'000;

  core::TimeMs steady_ms() const override { return steady_ns_ / 1'000'000; }
  core::Nanos steady_ns() const override { return steady_ns_; }
  core::UnixMs unix_ms() const override { return unix_ms_; }
  void advance(std::chrono::nanoseconds d) {
    steady_ns_ += d.count();
    unix_ms_ += std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  }

 private:
  core::Nanos steady_ns_ = kStartSteadyNs;
  core::UnixMs unix_ms_ = kStartUnixMs;
};

using HeaderPairs = std::vector<std::pair<std::string, std::string>>;

/// The session's header lookup over a list: case-insensitive, "" when absent.
struct HeaderLookup {
  const HeaderPairs* headers;
  std::string_view operator()(std::string_view name) const;
};

/// One request and what its stages decided. Owns everything its Exchange views; never moves.
class Call {
 public:
  Call(const pipeline::Snapshot& snap, const pipeline::AuthState& auth, metrics::WorkerStats& stats,
       const core::Clock& clock, std::string method, std::string target, HeaderPairs headers,
       std::string body);
  Call(const Call&) = delete;
  Call& operator=(const Call&) = delete;

  /// Runs the stages before `stage` (each must let the request go on: a test failure names the
  /// one that answered), then `stage`, and returns its answer.
  StageResult run(StageResult (*stage)(Exchange&));
  /// run_header_stages(): the stages before the body, up to the first answer.
  StageResult run_header();
  /// The header stages, then run_request_stages(): every stage, up to the first answer.
  StageResult run_all();
  /// Runs every stage (none may answer), then the request filter `filter`.
  void filter(void (*filter)(Exchange&));

  Exchange& x() { return x_; }
  pipeline::RequestContext& ctx() { return ctx_; }

 private:
  std::string method_, target_, body_;
  HeaderPairs headers_;
  HeaderLookup lookup_{&headers_};
  pipeline::RequestContext ctx_;
  Exchange x_;
};

/// Configuration, snapshot, AuthState, statistics and clock of one test.
class StageEnv {
 public:
  /// Loads `yaml` with config::load_string (secrets from the process environment: set them with
  /// setenv first). A `server` section with one listener is added when the YAML has none.
  /// Throws std::runtime_error listing the loader's errors.
  static StageEnv from_yaml(std::string_view yaml);
  ~StageEnv();
  StageEnv(const StageEnv&) = delete;
  StageEnv& operator=(const StageEnv&) = delete;

  /// A new request; a JSON content-type is added when `body` is not empty and `headers` names
  /// none. The call lives as long as the env.
  Call& request(std::string method, std::string target, HeaderPairs headers = {},
                std::string body = {});
  /// The latest request's run() / run_all().
  StageResult run(StageResult (*stage)(Exchange&)) { return calls_.back()->run(stage); }
  StageResult run_all() { return calls_.back()->run_all(); }

  const config::Config& config() const { return *snap_->config; }
  const pipeline::Snapshot& snapshot() const { return *snap_; }
  const pipeline::AuthState& auth() const { return *auth_; }
  metrics::WorkerStats& stats() { return stats_; }
  FakeClock& clock() { return clock_; }
  /// The calendar budgets' counters (seed() one as the ledger replay does at start).
  ratelimit::BudgetRegistry& budgets() { return budgets_; }
  /// The per-client cells of client `name` (a configured client, or "anonymous").
  metrics::ClientCells& client_stats(std::string_view name);
  /// The cells of deployment `name`'s "none" series (no backend, classes, shed).
  metrics::RouteCells& deployment_stats(std::string_view name);
  /// The live state of backend `name`.
  routing::BackendState& backend_state(std::string_view name);

 private:
  explicit StageEnv(std::shared_ptr<const config::Config> cfg);

  metrics::WorkerStats stats_;
  metrics::SeriesRegistry series_;
  ratelimit::BucketRegistry buckets_;
  ratelimit::BudgetRegistry budgets_;
  FakeClock clock_;
  std::shared_ptr<const pipeline::Snapshot> snap_;
  std::shared_ptr<const pipeline::AuthState> auth_;
  std::deque<std::unique_ptr<Call>> calls_;
};

/// `yaml` through config::load_string, as StageEnv::from_yaml loads it.
std::shared_ptr<const config::Config> load_config(std::string_view yaml);

/// Sets the secrets the tests' configurations name: AOAI_KEY (backends' api_key), APP_KEY
/// ("sk-app") and OTHER_KEY ("sk-other") for clients' keys.
class StageTest : public ::testing::Test {
 protected:
  void SetUp() override;
};

/// The reply's status (0 when there is no reply: the request went on).
int status(const StageResult& reply);
/// error.`field` of the reply's JSON body ("" when none; JSON text when not a string).
std::string error_field(const StageResult& reply, std::string_view field);
/// error.code of the reply's JSON body ("" when none).
std::string error_code(const StageResult& reply);
/// error.message of the reply's JSON body ("" when none).
std::string error_message(const StageResult& reply);
/// The value of the reply's header `name`, nullopt when absent.
std::optional<std::string> header(const StageResult& reply, std::string_view name);

}  // namespace tollgate::pipeline::testing

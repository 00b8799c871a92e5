#include "stage_env.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "server/snapshot_builder.hpp"
#include "tollgate/auth/keys.hpp"
#include "tollgate/config/config.hpp"
#include "tollgate/tokenize/encoding.hpp"

namespace tollgate::pipeline::testing {

namespace {

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

// Loaded once per test binary: the rank files take a while to parse.
std::shared_ptr<const tokenize::Tokenizers> tokenizers() {
  static const auto loaded = [] {
    auto t = tokenize::Tokenizers::load(TOLLGATE_TOKENIZER_DIR);
    if (!t) throw std::runtime_error("tokenizer rank files: " + t.error().message);
    return std::make_shared<const tokenize::Tokenizers>(std::move(t).value());
  }();
  return loaded;
}

std::optional<nlohmann::json> body_json(const StageResult& reply) {
  if (!reply) return std::nullopt;
  auto j = nlohmann::json::parse(reply->body, nullptr, false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

}  // namespace

std::string_view HeaderLookup::operator()(std::string_view name) const {
  for (const auto& [n, v] : *headers) {
    if (iequals(n, name)) return v;
  }
  return {};
}

std::shared_ptr<const config::Config> load_config(std::string_view yaml) {
  std::string text(yaml);
  if (text.find("\nserver:") == std::string::npos && text.rfind("server:", 0) != 0) {
    text = "server: {listen: [{address: \"127.0.0.1:0\"}]}\n" + text;
  }
  auto r = config::load_string(text, "test.yaml");
  if (!r.ok()) {
    std::string all = "the test's configuration does not load:";
    for (const auto& e : r.errors) all += "\n  " + e;
    throw std::runtime_error(all);
  }
  return r.config;
}

// --- Call ---

Call::Call(const pipeline::Snapshot& snap, const pipeline::AuthState& auth, metrics::WorkerStats& stats,
           const core::Clock& clock, std::string method, std::string target, HeaderPairs headers,
           std::string body)
    : method_(std::move(method)),
      target_(std::move(target)),
      body_(std::move(body)),
      headers_(std::move(headers)),
      x_{snap, auth, RequestView{method_, target_, Headers(lookup_), body_}, ctx_, stats, clock} {}

StageResult Call::run(StageResult (*stage)(Exchange&)) {
  std::vector<Stage> all(kHeaderStages.begin(), kHeaderStages.end());
  all.insert(all.end(), kRequestStages.begin(), kRequestStages.end());
  for (const auto& s : all) {
    if (s.run == stage) return s.run(x_);
    if (auto reply = s.run(x_)) {
      ADD_FAILURE() << "stage " << s.name
                    << " answered before the stage under test: " << reply->status << " "
                    << reply->body;
      return reply;
    }
  }
  ADD_FAILURE() << "not a stage of kHeaderStages or kRequestStages";
  return std::nullopt;
}

StageResult Call::run_header() { return run_header_stages(x_); }

StageResult Call::run_all() {
  if (auto reply = run_header_stages(x_)) return reply;
  return run_request_stages(x_);
}

void Call::filter(void (*filter)(Exchange&)) {
  if (auto reply = run_all()) {
    ADD_FAILURE() << "the stages answered before the filter: " << reply->status << " "
                  << reply->body;
    return;
  }
  filter(x_);
}

// --- StageEnv ---

StageEnv StageEnv::from_yaml(std::string_view yaml) {
  return StageEnv(load_config(yaml));
}

StageEnv::StageEnv(std::shared_ptr<const config::Config> cfg) {
  series_.add_worker(&stats_);
  server::SnapshotBuilder builder(server::SnapshotSources{
      series_, buckets_,
      [](const config::BackendConfig&) { return std::make_shared<pipeline::TokenSlot>(); },
      [](routing::TimeMs) {}, std::make_shared<routing::Scheduler>(), tokenizers()});
  snap_ = builder.build(cfg);
  auth_ =
      server::build_auth_state(cfg, std::make_shared<const auth::KeyIndex>(*cfg, auth::KeysFile{}),
                               std::vector<std::shared_ptr<const auth::Jwks>>(cfg->auth.jwt.size()),
                               server::AuthSources{series_, buckets_, budgets_});
}

StageEnv::~StageEnv() = default;

Call& StageEnv::request(std::string method, std::string target, HeaderPairs headers,
                        std::string body) {
  bool typed = HeaderLookup{&headers}("content-type").size() > 0;
  if (!body.empty() && !typed) headers.emplace_back("content-type", "application/json");
  calls_.push_back(std::make_unique<Call>(*snap_, *auth_, stats_, clock_, std::move(method),
                                          std::move(target), std::move(headers), std::move(body)));
  return *calls_.back();
}

metrics::ClientCells& StageEnv::client_stats(std::string_view name) {
  if (name == "anonymous") return stats_.client(auth_->anonymous_series);
  const auto* c = config().find_client(name);
  if (c == nullptr) throw std::invalid_argument("no client " + std::string(name));
  return stats_.client(auth_->client_series[static_cast<std::size_t>(c - config().clients.data())]);
}

metrics::RouteCells& StageEnv::deployment_stats(std::string_view name) {
  const auto* d = config().find_deployment(name);
  if (d == nullptr) throw std::invalid_argument("no deployment " + std::string(name));
  return stats_.route(snap_->deployments[config().deployment_index(*d)].series_none);
}

routing::BackendState& StageEnv::backend_state(std::string_view name) {
  auto it = snap_->backend_index.find(std::string(name));
  if (it == snap_->backend_index.end())
    throw std::invalid_argument("no backend " + std::string(name));
  return *snap_->backends[it->second].state;
}

void StageTest::SetUp() {
  ::setenv("AOAI_KEY", "backend-secret", 1);
  ::setenv("APP_KEY", "sk-app", 1);
  ::setenv("OTHER_KEY", "sk-other", 1);
}

// --- replies ---

std::string error_field(const StageResult& reply, std::string_view field) {
  auto j = body_json(reply);
  if (!j || !j->contains("error") || !(*j)["error"].contains(std::string(field))) return {};
  const auto& v = (*j)["error"][std::string(field)];
  return v.is_string() ? v.get<std::string>() : v.dump();
}

int status(const StageResult& reply) {
  return reply ? reply->status : 0;
}
std::string error_code(const StageResult& reply) {
  return error_field(reply, "code");
}
std::string error_message(const StageResult& reply) {
  return error_field(reply, "message");
}

std::optional<std::string> header(const StageResult& reply, std::string_view name) {
  if (!reply) return std::nullopt;
  for (const auto& [n, v] : reply->headers) {
    if (iequals(n, name)) return v;
  }
  return std::nullopt;
}

}  // namespace tollgate::pipeline::testing

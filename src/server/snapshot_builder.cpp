#include "server/snapshot_builder.hpp"

#include <algorithm>
#include <stdexcept>

#include "proxy/tls.hpp"
#include "tollgate/core/json_fields.hpp"
#include "tollgate/metrics/logging.hpp"

namespace tollgate::server {

namespace {

// Connections are pooled per endpoint identity, so a reload keeps warm connections.
std::string pool_identity(const config::BackendConfig& b) {
  return b.endpoint.scheme + "://" + b.endpoint.host + ":" + std::to_string(b.endpoint.port) + "|" +
         b.ca_file;
}

// A backend keeps its live state (throttle, breaker, quota) across reloads while its name,
// endpoint and deployment stay the same.
std::string state_identity(const config::BackendConfig& b) {
  return b.name + "|" + b.endpoint.text + "|" + b.deployment;
}

std::shared_ptr<boost::asio::ssl::context> client_tls(const config::BackendConfig& b) {
  auto ctx = proxy::make_client_tls(proxy::CaOptions{b.ca_file});
  if (!ctx) {
    throw std::runtime_error("backend " + b.name +
                             ": cannot load CA certificates: " + ctx.error().message());
  }
  return std::move(*ctx);
}

// Which tiers each priority class may use (pools[].classes, pools[].spare); left empty when no
// pool restricts its classes.
void add_class_masks(DeploymentRuntime& drt, const config::Config& cfg,
                     const config::DeploymentConfig& d) {
  bool restricted =
      std::any_of(d.pools.begin(), d.pools.end(), [](const auto& p) { return !p.classes.empty(); });
  if (!restricted) return;
  for (std::size_t k = 0; k < cfg.priority.classes.size(); ++k) {
    auto& mask = drt.class_allowed.emplace_back(cfg.backends.size(), 0);
    auto& spare = drt.class_spare.emplace_back();
    for (const auto& p : d.pools) {
      for (auto b : p.backends) {
        if (p.allows(k)) {
          mask[b] = 1;
        } else if (p.spare_for(k)) {
          spare.push_back({static_cast<std::uint32_t>(b), p.spare_max_utilization});
        }
      }
    }
  }
}

bool in_regions(const config::DeploymentConfig& d, const std::string& region) {
  return d.regions.empty() ||
         std::find(d.regions.begin(), d.regions.end(), region) != d.regions.end();
}

bool any_token_limit(const config::LimitsConfig& limits) {
  return limits.tokens_per_minute > 0 || limits.budget.any();
}

tokenize::EncodingKind encoding_of(const config::DeploymentConfig& d) {
  return tokenize::encoding_for_model(d.model).value_or(tokenize::kFallbackEncoding);
}

}  // namespace

UsageRecorders UsageRecorders::of(const config::Config& cfg) {
  return UsageRecorders{!cfg.usage.ledger.empty(), cfg.logging.access_log != "off"};
}

bool counts_tokens(const config::Config& cfg, const config::DeploymentConfig& d,
                   const UsageRecorders& recorders) {
  if (recorders.ledger || recorders.access_log) return true;
  if (d.limits.tokens_per_minute > 0 || d.price.set) return true;
  return std::any_of(cfg.clients.begin(), cfg.clients.end(),
                     [](const auto& c) { return any_token_limit(c.limits); }) ||
         std::any_of(cfg.tenants.begin(), cfg.tenants.end(),
                     [](const auto& t) { return any_token_limit(t.limits); });
}

tokenize::EncodingSet needed_encodings(const config::Config& cfg, const UsageRecorders& recorders) {
  tokenize::EncodingSet needed;
  for (const auto& d : cfg.deployments) {
    if (counts_tokens(cfg, d, recorders)) needed.add(encoding_of(d));
  }
  return needed;
}

SnapshotBuilder::SnapshotBuilder(SnapshotSources sources)
    : sources_(std::move(sources)), tokenizers_(sources_.tokenizers) {}

std::shared_ptr<const Snapshot> SnapshotBuilder::build(std::shared_ptr<const config::Config> cfg) {
  if (generation_ == 0) recorders_ = UsageRecorders::of(*cfg);
  load_encodings(*cfg);
  auto s = std::make_shared<Snapshot>();
  s->config = cfg;
  s->generation = ++generation_;
  add_backends(*s, *cfg);
  s->unrouted_series = sources_.series.intern("none", "none");
  for (const auto& d : cfg->deployments) s->deployments.push_back(deployment(*cfg, d));
  share_live_state(*s, *cfg);
  return s;
}

void SnapshotBuilder::add_backends(Snapshot& s, const config::Config& cfg) {
  for (const auto& b : cfg.backends) {
    auto rt = backend(b);
    s.slots.push_back(routing::Slot{rt.state.get(), b.max_in_flight});
    s.backend_index.emplace(b.name, static_cast<std::uint32_t>(s.backends.size()));
    s.backends.push_back(std::move(rt));
  }
  s.pool_count = static_cast<std::uint32_t>(pool_ids_.size());
}

BackendRuntime SnapshotBuilder::backend(const config::BackendConfig& b) {
  BackendRuntime rt;
  rt.config = &b;
  if (b.endpoint.tls) rt.tls = client_tls(b);
  auto next_pool = static_cast<std::uint32_t>(pool_ids_.size());
  rt.pool_id = pool_ids_.emplace(pool_identity(b), next_pool).first->second;
  auto& state = backend_states_[state_identity(b)];
  if (!state) state = std::make_shared<routing::BackendState>();
  rt.state = state;
  if (b.token) rt.token = sources_.token_slot(b);
  return rt;
}

DeploymentRuntime SnapshotBuilder::deployment(const config::Config& cfg,
                                              const config::DeploymentConfig& d) {
  DeploymentRuntime drt;
  drt.series.assign(cfg.backends.size(), kNoSeries);
  drt.series_none = sources_.series.intern(d.name, "none");
  auto& budget = retry_budgets_[d.name];
  if (!budget) budget = std::make_shared<routing::RetryBudget>();
  drt.budget = budget;
  drt.counts_tokens = counts_tokens(cfg, d, recorders_);
  add_tiers(drt, cfg, d);
  ratelimit::add_limits(sources_.buckets, ratelimit::Scope::kDeployment, d.name, d.limits, drt.limits,
                        drt.buckets);
  add_class_masks(drt, cfg, d);
  while (drt.first_tier + 1 < drt.route.tiers.size() && drt.route.tiers[drt.first_tier].empty()) {
    ++drt.first_tier;
  }
  return drt;
}

void SnapshotBuilder::add_tiers(DeploymentRuntime& drt, const config::Config& cfg,
                                const config::DeploymentConfig& d) {
  for (std::uint32_t t = 0; t < d.pools.size(); ++t) {
    const auto& p = d.pools[t];
    auto& tier = drt.route.tiers.emplace_back();
    for (std::size_t k = 0; k < p.backends.size(); ++k) {
      auto b = p.backends[k];
      // Data residency: a backend outside the deployment's regions is never routed, not even
      // on failover.
      if (!in_regions(d, cfg.backends[b].region)) continue;
      tier.push_back(routing::Member{static_cast<std::uint32_t>(b), p.weights[k]});
      auto id = sources_.series.intern(d.name, cfg.backends[b].name);
      sources_.series.set_tier(id, t);
      drt.series[b] = id;
    }
  }
}

void SnapshotBuilder::share_live_state(Snapshot& s, const config::Config& cfg) {
  const auto& r = cfg.routing;
  if (!affinity_) {
    affinity_ =
        std::make_shared<routing::AffinityTable>(r.affinity_max_entries, r.affinity_ttl.count());
  } else {
    affinity_->configure(r.affinity_max_entries, r.affinity_ttl.count());
  }
  s.affinity = affinity_;
  s.scheduler = sources_.scheduler;
  s.wake_at = sources_.wake_at;
  s.breaker = routing::BreakerPolicy{r.breaker_failures, r.breaker_open.count(),
                                     r.breaker_max_open.count()};
  s.tokenizers = tokenizers_;
}

void SnapshotBuilder::load_encodings(const config::Config& cfg) {
  if (!tokenizers_) return;
  auto needed = needed_encodings(cfg, recorders_);
  auto before = tokenizers_->loaded();
  if (before.contains(needed)) return;
  auto more = tokenizers_->with(needed);
  if (!more) throw std::runtime_error(more.error().message);
  tokenizers_ = std::make_shared<const tokenize::Tokenizers>(std::move(more).value());
  for (auto kind : tokenize::kAllEncodings) {
    if (before.contains(kind) || !needed.contains(kind)) continue;
    metrics::log_info("tokenizer encoding loaded",
                      core::JsonFields()
                          .add("encoding", tokenize::encoding_name(kind))
                          .add("memory_bytes",
                               static_cast<std::uint64_t>(tokenizers_->get(kind).memory_bytes())));
  }
}

namespace {

void add_client(AuthState& s, const config::Config& cfg, const config::ClientConfig& c,
                const AuthSources& src) {
  bool has_tenant = c.tenant != config::ClientConfig::kNoTenant;
  s.client_series.push_back(src.series.intern_client(
      c.name, has_tenant ? cfg.tenants[c.tenant].name : std::string("none")));
  auto& limits = s.client_limits.emplace_back();
  auto& budgets = s.client_budgets.emplace_back();
  ratelimit::add_limits(src.buckets, ratelimit::Scope::kClient, c.name, c.limits, limits, s.buckets);
  ratelimit::add_budgets(src.budgets, ratelimit::Scope::kClient, c.name, c.limits.budget, budgets,
                         s.budgets);
  if (!has_tenant) return;
  const auto& t = cfg.tenants[c.tenant];
  ratelimit::add_limits(src.buckets, ratelimit::Scope::kTenant, t.name, t.limits, limits, s.buckets);
  ratelimit::add_budgets(src.budgets, ratelimit::Scope::kTenant, t.name, t.limits.budget, budgets,
                         s.budgets);
}

}  // namespace

std::shared_ptr<const AuthState> build_auth_state(
    std::shared_ptr<const config::Config> cfg, std::shared_ptr<const auth::KeyIndex> keys,
    std::vector<std::shared_ptr<const auth::Jwks>> jwks, const AuthSources& sources) {
  auto s = std::make_shared<AuthState>();
  s->config = std::move(cfg);
  s->keys = std::move(keys);
  s->jwks = std::move(jwks);
  sources.series.intern_client("unauthenticated", "none");  // id 0: refused before authentication
  s->anonymous_series = sources.series.intern_client("anonymous", "none");
  for (const auto& c : s->config->clients) add_client(*s, *s->config, c, sources);
  return s;
}

}  // namespace tollgate::server

#pragma once
// One generation of the configuration plus what the network layer derives from it (TLS contexts,
// metrics series ids, upstream pool ids). Immutable once published; each request pins the
// snapshot it started with (shared_ptr), so a reload never changes a running request.

#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "tollgate/auth/jwt.hpp"
#include "tollgate/auth/keys.hpp"
#include "tollgate/config/config.hpp"
#include "tollgate/ratelimit/budget.hpp"
#include "tollgate/ratelimit/bucket.hpp"
#include "tollgate/routing/affinity.hpp"
#include "tollgate/routing/priority.hpp"
#include "tollgate/tokenize/encoding.hpp"
#include "tollgate/routing/backend_state.hpp"
#include "tollgate/routing/balancer.hpp"

namespace boost::asio::ssl {
class context;
}

namespace tollgate::pipeline {

/// A backend's Entra ID access token: written by the control thread's refresher, read by workers
/// for each request to that backend.
struct TokenSlot {
  std::atomic<std::shared_ptr<const std::string>> token;  // null until the first token arrives
  std::atomic<std::int64_t> expires_unix{0};              // seconds
  std::atomic<std::uint64_t> refresh_failures{0};
};

struct BackendRuntime {
  const config::BackendConfig* config = nullptr;
  std::shared_ptr<boost::asio::ssl::context> tls;  // null for http:// backends
  std::uint32_t pool_id = 0;  // per-worker upstream pool (stable across reloads per endpoint)
  std::shared_ptr<routing::BackendState> state;  // shared by workers; survives reloads
  std::shared_ptr<TokenSlot> token;              // backends with entra/managed_identity only
};

inline constexpr std::uint32_t kNoSeries = std::numeric_limits<std::uint32_t>::max();

struct DeploymentRuntime {
  routing::Route route;                         // tiers restricted to the allowed regions
  std::shared_ptr<routing::RetryBudget> budget;  // shared by workers; survives reloads
  std::uint32_t series_none = 0;                // metrics series (deployment, "none")
  std::uint32_t first_tier = 0;                 // the first tier with a backend (regions)
  std::vector<std::uint32_t> series;            // by backend index; kNoSeries if not routed
  std::vector<ratelimit::Limit> limits;         // the deployment's own TPM/RPM buckets
  std::vector<std::shared_ptr<ratelimit::Bucket>> buckets;  // keeps `limits` alive
  // Some limit, budget, price or usage record needs its requests' token counts (the snapshot's
  // tokenizers then hold its model's encoding): server::counts_tokens.
  bool counts_tokens = false;
  // Priority classes' access to tiers (pools[].classes): per class rank, allowed[b] for every
  // backend; empty when the class may use every tier. Tiers a class may use only as spare
  // capacity (pools[].spare) are listed with their utilization threshold.
  struct Spare {
    std::uint32_t backend = 0;
    double max_utilization = 0;
  };
  std::vector<std::vector<char>> class_allowed;
  std::vector<std::vector<Spare>> class_spare;
};

struct Snapshot {
  std::shared_ptr<const config::Config> config;
  std::vector<BackendRuntime> backends;  // parallel to config->backends
  std::vector<routing::Slot> slots;       // parallel to backends: the balancer's view
  std::vector<DeploymentRuntime> deployments;  // parallel to config->deployments
  std::unordered_map<std::string, std::uint32_t> backend_index;  // name -> index
  std::shared_ptr<routing::AffinityTable> affinity;  // shared by workers; survives reloads
  std::shared_ptr<routing::Scheduler> scheduler;     // waiting rooms; survives reloads
  /// Asks the control thread to kick the scheduler at `at` (a waiting request's recovery time).
  std::function<void(routing::TimeMs)> wake_at;
  routing::BreakerPolicy breaker;
  // The encodings the deployments that count tokens need (exact prompt counts for admission,
  // output counts); null only in tests that never count.
  std::shared_ptr<const tokenize::Tokenizers> tokenizers;
  std::uint32_t unrouted_series = 0;             // ("none", "none")
  std::uint32_t pool_count = 0;
  std::uint64_t generation = 0;
};

/// Who may call: clients and their keys, JWT issuers' key sets. Published to the workers like a
/// snapshot, but also on its own when keys change (admin API) or a JWKS is refreshed.
struct AuthState {
  std::shared_ptr<const config::Config> config;            // clients, tenants, issuers
  std::shared_ptr<const auth::KeyIndex> keys;
  std::vector<std::shared_ptr<const auth::Jwks>> jwks;      // parallel to config->auth.jwt
  std::vector<std::uint32_t> client_series;                 // parallel to config->clients
  std::uint32_t anonymous_series = 0;
  std::vector<std::vector<ratelimit::Limit>> client_limits;  // parallel: client's, then tenant's
  std::vector<std::shared_ptr<ratelimit::Bucket>> buckets;    // keeps client_limits alive
  std::vector<std::vector<ratelimit::BudgetLimit>> client_budgets;  // parallel: client's, tenant's
  std::vector<std::shared_ptr<ratelimit::Budget>> budgets;          // keeps client_budgets alive
};

}  // namespace tollgate::pipeline

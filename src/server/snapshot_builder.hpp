#pragma once
// Builds what the workers run on from a configuration: the Snapshot (backends, deployments,
// routing, the deployments' limits) and the AuthState (clients, keys, the clients' limits and
// budgets). The live state a reload must keep — backend states, retry budgets, upstream pool
// ids, buckets, the affinity table, the waiting rooms, metrics series — is held here or in the
// registries it is given, keyed by identity, so the next generation picks it up again.
// No I/O besides reading CA files; the gateway (control thread) and the pipeline's unit tests
// (tests/unit/pipeline) both build through it.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "server/runtime.hpp"
#include "tollgate/metrics/stats.hpp"

namespace tollgate::server {

/// What a snapshot draws on that lives outside the builder. The references outlive it.
struct SnapshotSources {
  metrics::SeriesRegistry& series;     // (deployment, backend) series ids
  ratelimit::BucketRegistry& buckets;  // the deployments' limits (clients': build_auth_state)
  /// The token slot of a backend with Entra ID / managed identity (kept across reloads).
  std::function<std::shared_ptr<TokenSlot>(const config::BackendConfig&)> token_slot;
  /// Published in every snapshot: asks the control thread to kick the waiting rooms at `at`.
  std::function<void(routing::TimeMs)> wake_at;
  std::shared_ptr<routing::Scheduler> scheduler;  // the waiting rooms
  /// The encodings loaded so far (and the count cache): the builder loads into a copy what a
  /// configuration needs beyond them (needed_encodings). Null: no tokenizer (routing tests).
  std::shared_ptr<const tokenize::Tokenizers> tokenizers;
};

/// The settings that need token counts and that only a restart changes: what the process started
/// with, whatever a reloaded configuration says.
struct UsageRecorders {
  bool ledger = false;      // usage.ledger: each call of a known caller, with its tokens
  bool access_log = false;  // logging.access_log not "off": each request's charged_tokens
  static UsageRecorders of(const config::Config& cfg);
};

/// Whether a request to `d` under `cfg` can need its tokens counted (its prompt before it is
/// forwarded, or its prompt and output after an answer without usage): when a client or tenant
/// has a token limit or a budget (clients may call any deployment), `d` has a token limit or a
/// price, or `recorders` records usage. Request limits, max_tokens caps and the n/best_of policy
/// need no count. THE rule: the admit stage counts only for such deployments
/// (DeploymentRuntime::counts_tokens), and the encodings loaded are theirs (needed_encodings).
bool counts_tokens(const config::Config& cfg, const config::DeploymentConfig& d,
                   const UsageRecorders& recorders);

/// The encodings of the deployments that count tokens (counts_tokens): each deployment's model's
/// (encoding_for_model, else tokenize::kFallbackEncoding).
tokenize::EncodingSet needed_encodings(const config::Config& cfg, const UsageRecorders& recorders);

/// Thread: the one that builds (the control thread). Snapshots it returns are immutable and may
/// be read by any thread.
class SnapshotBuilder {
 public:
  explicit SnapshotBuilder(SnapshotSources sources);

  /// The runtime view of `cfg`, the next generation. Loads the encodings `cfg` needs that are
  /// not loaded yet (~0.1–0.3 s each; the workers never load one). Throws std::runtime_error
  /// naming the backend whose CA certificates cannot be loaded, or the rank file that cannot
  /// (a reload then keeps the running snapshot).
  std::shared_ptr<const Snapshot> build(std::shared_ptr<const config::Config> cfg);

 private:
  void add_backends(Snapshot& s, const config::Config& cfg);
  BackendRuntime backend(const config::BackendConfig& b);
  DeploymentRuntime deployment(const config::Config& cfg, const config::DeploymentConfig& d);
  void add_tiers(DeploymentRuntime& drt, const config::Config& cfg,
                 const config::DeploymentConfig& d);
  void share_live_state(Snapshot& s, const config::Config& cfg);
  void load_encodings(const config::Config& cfg);

  SnapshotSources sources_;
  std::uint64_t generation_ = 0;
  UsageRecorders recorders_;  // the first configuration's (the process started with it)
  // The encodings loaded so far: sources_.tokenizers, or a copy with more. Owner: the building
  // thread; snapshots share it.
  std::shared_ptr<const tokenize::Tokenizers> tokenizers_;
  // Live state kept across reloads, by identity. Owner: the building thread.
  std::unordered_map<std::string, std::uint32_t> pool_ids_;  // endpoint identity -> pool id
  std::unordered_map<std::string, std::shared_ptr<routing::BackendState>> backend_states_;
  std::unordered_map<std::string, std::shared_ptr<routing::RetryBudget>> retry_budgets_;
  std::shared_ptr<routing::AffinityTable> affinity_;  // created by the first build
};

/// What an AuthState draws on: per-client metrics series, and the registries that keep the
/// clients' and tenants' buckets and budgets across generations. The references outlive it.
struct AuthSources {
  metrics::SeriesRegistry& series;
  ratelimit::BucketRegistry& buckets;
  ratelimit::BudgetRegistry& budgets;
};

/// Who may call under `cfg`: its clients with `keys` and the issuers' key sets `jwks` (parallel
/// to cfg->auth.jwt; null while not fetched), each client's limits then its tenant's.
/// Interns the client series ("unauthenticated" first: id 0). No I/O. Thread: control.
std::shared_ptr<const AuthState> build_auth_state(
    std::shared_ptr<const config::Config> cfg, std::shared_ptr<const auth::KeyIndex> keys,
    std::vector<std::shared_ptr<const auth::Jwks>> jwks, const AuthSources& sources);

}  // namespace tollgate::server

#pragma once
// Per-worker statistics, summed at scrape time (the collector is the only prometheus-cpp user).
// Every cell has exactly one writer (its worker) and is read by the scraper: relaxed atomics,
// incremented with load+store (no locked instruction; see cells.hpp). Series ids are interned at
// config load (control thread) and stay stable across reloads so counters never reset. Each
// family's name, help, type and labels are declared once, in families.hpp.

#include <prometheus/metric_family.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tollgate/metrics/cells.hpp"
#include "tollgate/ratelimit/bucket.hpp"
#include "tollgate/ratelimit/budget.hpp"

namespace tollgate::metrics {

enum class StatusClass : std::uint8_t { k1xx, k2xx, k3xx, k4xx, k5xx, kNone, kCount };
StatusClass status_class(int status);
std::string_view to_string(StatusClass c);

enum class UpstreamError : std::uint8_t {
  kResolve,
  kConnect,
  kConnectTimeout,
  kTls,
  kWrite,
  kFirstByteTimeout,
  kIdleTimeout,
  kReset,       // connection closed/reset by the backend mid-response
  kProtocol,    // malformed HTTP from the backend
  kClientGone,  // the client disconnected before the response ended
  kCredential,  // no token for the backend (Entra ID token acquisition failing)
  kCount
};
std::string_view to_string(UpstreamError e);

enum class TokenType : std::uint8_t { kPrompt, kCompletion, kCached, kReasoning, kCount };
std::string_view to_string(TokenType t);

/// Why a request left a backend for another one.
enum class RetryReason : std::uint8_t { kThrottled, kServerError, kTimeout, kConnect, kCount };
std::string_view to_string(RetryReason r);

inline constexpr std::size_t kMaxTiers = 8;    // spillover counters beyond this are not kept
inline constexpr std::size_t kMaxClasses = 8;  // priority classes

/// Why a request that could have waited for capacity was answered without it.
enum class ShedReason : std::uint8_t { kQueueFull, kDeadline, kUnreachable, kClientGone, kCount };
std::string_view to_string(ShedReason r);

/// The answer the gateway gave when no backend could take a request.
enum class NoBackendCode : std::uint8_t { k429, k503, kCount };
std::string_view to_string(NoBackendCode c);

/// Why accepting a client connection failed: out of descriptors (process: emfile, system:
/// enfile), out of kernel memory (enobufs, enomem), or another error.
enum class AcceptError : std::uint8_t { kEmfile, kEnfile, kEnobufs, kEnomem, kOther, kCount };
std::string_view to_string(AcceptError e);

/// Why a call to the cluster's Redis failed (cluster::RedisFailure, as the metrics label it).
enum class RedisError : std::uint8_t { kTimeout, kConnect, kTls, kAuth, kClosed, kProtocol, kOverloaded, kCount };
std::string_view to_string(RedisError e);

/// A backend's (0-based) tier in its deployment; the last rank holds every tier beyond it.
using TierRank = Rank<struct TierTag, kMaxTiers>;
constexpr TierRank tier_rank(std::size_t tier) noexcept {
  return {std::min(tier, kMaxTiers - 1)};
}
/// A priority class's rank in the config's class list.
using ClassRank = Rank<struct ClassTag, kMaxClasses>;

// Label sizes of the admission enums (declared in ratelimit without a kCount).
template <>
inline constexpr std::size_t kLabelSize<ratelimit::Scope> =
    static_cast<std::size_t>(ratelimit::Scope::kDeployment) + 1;
template <>
inline constexpr std::size_t kLabelSize<ratelimit::Unit> =
    static_cast<std::size_t>(ratelimit::Unit::kRequests) + 1;
template <>
inline constexpr std::size_t kLabelSize<ratelimit::Period> =
    static_cast<std::size_t>(ratelimit::Period::kMonth) + 1;
template <>
inline constexpr std::size_t kLabelSize<ratelimit::Measure> =
    static_cast<std::size_t>(ratelimit::Measure::kNanoUsd) + 1;

/// Cells of one (deployment, backend) series on one worker. Their families: families.hpp.
struct RouteCells {
  CellArray<Counter, Label<"code", StatusClass>> requests;
  Histogram duration;
  Histogram ttfb;
  CellArray<Counter, Label<"type", TokenType>> tokens;
  CellArray<Counter, Label<"reason", UpstreamError>> upstream_errors;
  Counter usage_missing;  // a successful inference response without usage
  // Routing. On a backend's series: retries away from it, and requests it served after
  // spilling over from tier spilled_from[t]. On a deployment's ("none") series: requests no
  // backend could take and retries refused by the budget.
  CellArray<Counter, Label<"reason", RetryReason>> retries;
  CellArray<Counter, Label<"from_tier", TierRank>> spilled_from;
  CellArray<Counter, Label<"code", NoBackendCode>> no_backend;
  Counter budget_exhausted;
  Counter cost_nano_usd;  // by the deployment's price table
  // Priority (on a deployment's "none" series, by class rank): requests admitted to routing,
  // requests that waited for capacity, their waits, and the ones shed by ShedReason.
  CellArray<Counter, Label<"class", ClassRank>> class_requests;
  CellArray<Counter, Label<"class", ClassRank>> dispatched;
  CellArray<Histogram, Label<"class", ClassRank>> queue_wait;
  CellArray<Counter, Label<"class", ClassRank>, Label<"reason", ShedReason>> shed;
};

/// Cells of one client on one worker. Their families: families.hpp.
struct ClientCells {
  CellArray<Counter, Label<"code", StatusClass>> requests;
  CellArray<Counter, Label<"type", TokenType>> tokens;
  CellArray<Counter, Label<"scope", ratelimit::Scope>, Label<"limit", ratelimit::Unit>>
      rate_limited;
  Counter usage_estimated;  // requests billed from the gateway's own count
  Counter charged_tokens;   // tokens settled against the buckets
  // Budgets have client and tenant scopes only (the deployment row stays 0).
  CellArray<Counter, Label<"scope", ratelimit::Scope>, Label<"period", ratelimit::Period>,
            Label<"unit", ratelimit::Measure>>
      budget_refused;
  Counter cost_nano_usd;
};
inline constexpr std::uint32_t kMaxClientSeries = 4096;

inline constexpr std::uint32_t kBlockShift = 6;
inline constexpr std::uint32_t kBlockSize = 1u << kBlockShift;
inline constexpr std::uint32_t kMaxBlocks = 1024;  // 65,536 series

class WorkerStats {
 public:
  /// Thread: the owning worker. `id` must have been interned before the worker saw it.
  RouteCells& route(std::uint32_t id) noexcept {
    return blocks_[id >> kBlockShift][id & (kBlockSize - 1)];
  }
  const RouteCells* route_if(std::uint32_t id) const noexcept {
    const auto& b = blocks_[id >> kBlockShift];
    return b ? &b[id & (kBlockSize - 1)] : nullptr;
  }
  /// Thread: control thread (config load), before publishing ids >= `count`.
  void ensure(std::uint32_t count);
  /// Thread: the owning worker. `id` < kMaxClientSeries.
  ClientCells& client(std::uint32_t id) noexcept { return clients_[id]; }
  const ClientCells& client(std::uint32_t id) const noexcept { return clients_[id]; }

  Gauge in_flight;         // requests being handled
  Gauge open_connections;  // client connections
  Counter connections_total;
  Gauge upstream_idle;  // idle pooled upstream connections
  Counter upstream_connects;
  Gauge reservations;  // admission reservations not yet settled
  CellArray<Counter, Label<"reason", AcceptError>> accept_errors;
  Counter connections_refused;  // over server.limits.max_connections_per_ip
  // The cluster's store (cluster:), written by the worker's Redis connection and shared limiter.
  Gauge cluster_up;  // 1 while this worker's connection is up
  Histogram cluster_round_trip;
  CellArray<Counter, Label<"reason", RedisError>> cluster_failures;
  Gauge cluster_unsettled;  // leases and flushes not yet given back to Redis (SharedLimiter::unsettled)

 private:
  std::array<std::unique_ptr<RouteCells[]>, kMaxBlocks> blocks_;
  std::unique_ptr<ClientCells[]> clients_ = std::make_unique<ClientCells[]>(kMaxClientSeries);
};

/// Interns (deployment, backend) label pairs. Thread: control thread only.
class SeriesRegistry {
 public:
  /// Stable id for the pair; allocates cells in every registered worker. Returns UINT32_MAX when
  /// the table is full.
  std::uint32_t intern(std::string_view deployment, std::string_view backend);
  std::uint32_t size() const { return static_cast<std::uint32_t>(labels_.size()); }
  const std::pair<std::string, std::string>& labels(std::uint32_t id) const { return labels_[id]; }
  /// The (0-based) tier of the series' backend in its deployment, as of the last load.
  void set_tier(std::uint32_t id, std::uint32_t tier) { tiers_[id] = tier; }
  std::uint32_t tier(std::uint32_t id) const { return tiers_[id]; }
  void add_worker(WorkerStats* w);
  const std::vector<WorkerStats*>& workers() const { return workers_; }
  /// Stable id of a (client, tenant) pair for the per-client metrics; the last id is reused
  /// when the table is full.
  std::uint32_t intern_client(std::string_view client, std::string_view tenant);
  std::uint32_t client_count() const { return static_cast<std::uint32_t>(client_labels_.size()); }
  const std::pair<std::string, std::string>& client_labels(std::uint32_t id) const {
    return client_labels_[id];
  }

 private:
  std::vector<std::pair<std::string, std::string>> labels_;
  std::vector<std::uint32_t> tiers_;
  std::vector<std::pair<std::string, std::string>> client_labels_;
  std::unordered_map<std::string, std::uint32_t> client_index_;
  std::unordered_map<std::string, std::uint32_t> index_;
  std::vector<WorkerStats*> workers_;
};

/// Process-wide counters written by the control thread.
struct ControlStats {
  Counter reloads_ok;
  Counter reloads_failed;
  std::atomic<double> last_reload_ok_time{0};
  std::atomic<int> ready{0};
};

/// The Prometheus text exposition of everything; `extra` is appended (families that other modules
/// read from their own state, e.g. backend health). Thread: control thread.
std::string render_metrics(const SeriesRegistry& registry, const ControlStats& control,
                           std::vector<prometheus::MetricFamily> extra = {});

}  // namespace tollgate::metrics

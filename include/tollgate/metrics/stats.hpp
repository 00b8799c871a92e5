#pragma once
// Per-worker statistics, summed at scrape time (the collector is the only prometheus-cpp user).
// Every cell has exactly one writer (its worker) and is read by the scraper: relaxed atomics,
// incremented with load+store (no locked instruction). Series ids are interned at config load
// (control thread) and stay stable across reloads so counters never reset.

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <prometheus/metric_family.h>

namespace tollgate::metrics {

class Counter {
 public:
  void add(std::uint64_t n = 1) noexcept {
    v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  std::uint64_t value() const noexcept { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> v_{0};
};

class Gauge {
 public:
  void add(std::int64_t n) noexcept {
    v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  std::int64_t value() const noexcept { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::int64_t> v_{0};
};

/// Latency bucket bounds in seconds (the +Inf bucket is implicit).
inline constexpr std::array<double, 17> kLatencyBounds = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5,    1,     2.5,    5,     10,   30,    60,   120};

class Histogram {
 public:
  void observe_micros(std::int64_t us) noexcept;
  std::uint64_t bucket(std::size_t i) const noexcept { return buckets_[i].value(); }
  std::uint64_t sum_micros() const noexcept { return sum_us_.value(); }

 private:
  std::array<Counter, kLatencyBounds.size() + 1> buckets_;
  Counter sum_us_;
};

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

inline constexpr std::size_t kMaxTiers = 8;  // spillover counters beyond this are not kept
inline constexpr std::size_t kMaxClasses = 8;  // priority classes

/// Cells of one (deployment, backend) series on one worker.
struct RouteCells {
  std::array<Counter, static_cast<std::size_t>(StatusClass::kCount)> requests;
  Histogram duration;
  Histogram ttfb;
  std::array<Counter, static_cast<std::size_t>(TokenType::kCount)> tokens;
  std::array<Counter, static_cast<std::size_t>(UpstreamError::kCount)> upstream_errors;
  Counter usage_missing;  // a successful inference response without usage
  // Routing. On a backend's series: retries away from it, and requests it served after
  // spilling over from tier spilled_from[i] (0-based). On a deployment's ("none") series:
  // requests no backend could take (429, 503) and retries refused by the budget.
  std::array<Counter, static_cast<std::size_t>(RetryReason::kCount)> retries;
  std::array<Counter, kMaxTiers> spilled_from;
  std::array<Counter, 2> no_backend;  // [0]: 429, [1]: 503
  Counter budget_exhausted;
  Counter cost_nano_usd;  // by the deployment's price table
  // Priority (on a deployment's "none" series, by class rank): requests admitted to routing,
  // requests that waited for capacity, their waits, and the ones shed by ShedReason.
  std::array<Counter, kMaxClasses> class_requests;
  std::array<Counter, kMaxClasses> dispatched;
  std::array<Histogram, kMaxClasses> queue_wait;
  std::array<std::array<Counter, 4>, kMaxClasses> shed;
};

/// Why a request that could have waited for capacity was answered without it.
enum class ShedReason : std::uint8_t { kQueueFull, kDeadline, kUnreachable, kClientGone, kCount };
std::string_view to_string(ShedReason r);

/// Cells of one client on one worker.
struct ClientCells {
  std::array<Counter, static_cast<std::size_t>(StatusClass::kCount)> requests;
  std::array<Counter, static_cast<std::size_t>(TokenType::kCount)> tokens;
  std::array<Counter, 6> rate_limited;  // [scope * 2 + unit]: client/tenant/deployment × tokens/requests
  Counter usage_estimated;              // requests billed from the gateway's own count
  Counter charged_tokens;               // tokens settled against the buckets
  // [scope * 4 + period * 2 + measure]: client/tenant × day/month × tokens/usd
  std::array<Counter, 8> budget_refused;
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
  Gauge upstream_idle;     // idle pooled upstream connections
  Counter upstream_connects;
  Gauge reservations;      // admission reservations not yet settled

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

/// Helpers for modules that export families read from their own state at scrape time.
prometheus::MetricFamily family(std::string name, std::string help, prometheus::MetricType type);
void add_counter(prometheus::MetricFamily& f, std::vector<prometheus::ClientMetric::Label> labels,
                 double value);
void add_gauge(prometheus::MetricFamily& f, std::vector<prometheus::ClientMetric::Label> labels,
               double value);

/// Sums series `id`'s histogram (chosen by `get`) over every worker into one metric of `f`.
void add_histogram(prometheus::MetricFamily& f, std::vector<prometheus::ClientMetric::Label> labels,
                   const SeriesRegistry& reg, std::uint32_t id,
                   const std::function<const Histogram&(const RouteCells&)>& get);
/// Sums a counter of series `id` (chosen by `get`) over every worker.
std::uint64_t sum_counter(const SeriesRegistry& reg, std::uint32_t id,
                          const std::function<const Counter&(const RouteCells&)>& get);

/// The Prometheus text exposition of everything; `extra` is appended (families that other modules
/// read from their own state, e.g. backend health). Thread: control thread.
std::string render_metrics(const SeriesRegistry& registry, const ControlStats& control,
                           std::vector<prometheus::MetricFamily> extra = {});

}  // namespace tollgate::metrics

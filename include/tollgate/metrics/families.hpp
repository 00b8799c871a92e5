#pragma once
// Every metric family the gateway exports, each declared once: name, help, type and labels.
//
// Families of per-worker cells (stats.hpp) are entries binding a cell member: the member's type
// gives the family type (Counter, Gauge, Histogram) and the label set (CellArray's Labels), the
// entry adds the series labels and when a sample is exported. render_metrics walks these tables.
// Families that other modules read from their own state at scrape time (backend state, limits,
// budgets, the ledger, health checks, priority queues) are FamilySpecs: the module fills a
// FamilyBuilder with the spec's labels, in the spec's order.
//
// The order of the entries is the order of the exposition.

#include <prometheus/metric_family.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <tuple>
#include <vector>

#include "tollgate/metrics/stats.hpp"

namespace tollgate::metrics {

using prometheus::MetricType;

/// A family read from a module's state at scrape time: its name, help, type and label names.
template <std::size_t N>
struct FamilySpec {
  std::string_view name;
  std::string_view help;
  MetricType type;
  std::array<std::string_view, N> labels;
};

/// Histogram buckets and sum, summed over workers.
struct HistogramSum {
  std::array<std::uint64_t, Histogram::kBuckets> counts{};
  std::uint64_t sum_us = 0;
  void add(const Histogram& h) noexcept;
  std::uint64_t count() const noexcept;
};

/// Collects the samples of one family. Thread: the scraping (control) thread.
template <std::size_t N>
class FamilyBuilder {
 public:
  explicit FamilyBuilder(const FamilySpec<N>& spec);
  /// One sample of a counter or gauge family; `values` name the spec's labels in order.
  void add(const std::array<std::string_view, N>& values, double value);
  /// One sample of a histogram family.
  void add(const std::array<std::string_view, N>& values, const HistogramSum& h);
  prometheus::MetricFamily take() { return std::move(family_); }

 private:
  const FamilySpec<N>& spec_;
  prometheus::MetricFamily family_;
};

/// When a cell family exports a sample of a series. A series is "in use" once any family
/// exported only for series in use has a non-zero sample in it (a route never used exports
/// nothing but what is kNonZero).
enum class Export : std::uint8_t {
  kNonZero,        // every non-zero sample
  kAllOfUsed,      // every sample of a series in use, zeros included
  kNonZeroOfUsed,  // the non-zero samples of a series in use
};

/// The labels that name a series: a route's {deployment, backend}, its deployment alone (for
/// counts kept on a deployment's "none" series), or a client's {client, tenant}.
enum class SeriesLabels : std::uint8_t { kRoute, kDeployment, kClient };

/// A family of per-worker cells: `member` of every series' cells, summed over workers.
template <class Cells, class Member>
struct CellFamily {
  std::string_view name;
  std::string_view help;
  Member Cells::*member;
  Export show;
  SeriesLabels series;
  double per_unit;  // counted units per exported unit (nano-USD counted, USD exported: 1e9)
};

template <class Cells, class Member>
constexpr CellFamily<Cells, Member> cell_family(std::string_view name, std::string_view help,
                                                Member Cells::*member, Export show,
                                                SeriesLabels series, double per_unit = 1) {
  return {name, help, member, show, series, per_unit};
}

/// A family of one process-wide cell (or typed array of cells) summed over workers.
template <class Member>
struct WorkerFamily {
  std::string_view name;
  std::string_view help;
  Member WorkerStats::*member;
};

/// Spillovers are summed over a deployment's backends by (from tier, to tier): the serving
/// backend's tier is the registry's, not a cell's.
struct SpilloverFamily {
  FamilySpec<3> spec;
};

namespace families {

inline constexpr auto kRoute = std::tuple{
    cell_family("tollgate_requests_total",
                "Requests handled, by deployment, backend and status class "
                "(code=\"none\": no response status was sent).",
                &RouteCells::requests, Export::kNonZeroOfUsed, SeriesLabels::kRoute),
    cell_family("tollgate_request_duration_seconds",
                "Time from the request's arrival to the end of its response.",
                &RouteCells::duration, Export::kAllOfUsed, SeriesLabels::kRoute),
    cell_family("tollgate_time_to_first_byte_seconds",
                "Time from the request's arrival to the first response byte from the backend.",
                &RouteCells::ttfb, Export::kAllOfUsed, SeriesLabels::kRoute),
    cell_family("tollgate_tokens_total", "Tokens reported by backends, by type.",
                &RouteCells::tokens, Export::kAllOfUsed, SeriesLabels::kRoute),
    cell_family("tollgate_upstream_errors_total", "Upstream failures by reason.",
                &RouteCells::upstream_errors, Export::kNonZeroOfUsed, SeriesLabels::kRoute),
    cell_family("tollgate_usage_missing_total",
                "Successful inference responses that carried no usage.", &RouteCells::usage_missing,
                Export::kAllOfUsed, SeriesLabels::kRoute),
    cell_family("tollgate_retries_total",
                "Attempts that failed on a backend and were retried on another, by the failed "
                "backend and the reason.",
                &RouteCells::retries, Export::kNonZero, SeriesLabels::kRoute),
    SpilloverFamily{{"tollgate_spillovers_total",
                     "Requests served by a lower-priority tier because the tiers before it could "
                     "not take them (tiers are numbered from 1).",
                     MetricType::Counter,
                     {"deployment", "from_tier", "to_tier"}}},
    cell_family("tollgate_no_backend_available_total",
                "Requests answered by the gateway because no backend could take them (429: "
                "capacity returns soon; 503: it does not).",
                &RouteCells::no_backend, Export::kNonZero, SeriesLabels::kDeployment),
    cell_family("tollgate_retry_budget_exhausted_total",
                "Retries not made because the deployment's retry budget was spent.",
                &RouteCells::budget_exhausted, Export::kNonZero, SeriesLabels::kDeployment),
    cell_family("tollgate_cost_usd_total",
                "What requests cost by the deployment's price table, in USD.",
                &RouteCells::cost_nano_usd, Export::kNonZeroOfUsed, SeriesLabels::kRoute, 1e9),
};

inline constexpr auto kWorker = std::tuple{
    WorkerFamily<Gauge>{"tollgate_in_flight_requests", "Requests being handled now.",
                        &WorkerStats::in_flight},
    WorkerFamily<Gauge>{"tollgate_open_connections", "Open client connections.",
                        &WorkerStats::open_connections},
    WorkerFamily<Gauge>{"tollgate_reservations_outstanding",
                        "Admission reservations (tokens held from limits and budgets) not yet "
                        "settled.",
                        &WorkerStats::reservations},
    WorkerFamily<Counter>{"tollgate_connections_total", "Client connections accepted.",
                          &WorkerStats::connections_total},
    WorkerFamily<Gauge>{"tollgate_upstream_idle_connections",
                        "Idle pooled connections to backends.", &WorkerStats::upstream_idle},
    WorkerFamily<Counter>{"tollgate_upstream_connections_total", "Connections opened to backends.",
                          &WorkerStats::upstream_connects},
    WorkerFamily<decltype(WorkerStats::accept_errors)>{
        "tollgate_accept_errors_total",
        "Failed accepts of client connections, by reason: emfile (the process is out of file "
        "descriptors), enfile (the system is), enobufs, enomem, other.",
        &WorkerStats::accept_errors},
    WorkerFamily<Counter>{"tollgate_connections_refused_total",
                          "Client connections refused (429, then closed) because their source "
                          "address had server.limits.max_connections_per_ip open already.",
                          &WorkerStats::connections_refused},
};

inline constexpr FamilySpec<1> kConfigReloads{"tollgate_config_reloads_total",
                                              "Configuration reloads by result.",
                                              MetricType::Counter,
                                              {"result"}};
inline constexpr FamilySpec<0> kConfigLastReload{
    "tollgate_config_last_reload_success_timestamp_seconds",
    "Unix time of the last successful configuration load.",
    MetricType::Gauge,
    {}};
inline constexpr FamilySpec<1> kBuildInfo{
    "tollgate_build_info", "Build information.", MetricType::Gauge, {"version"}};

inline constexpr auto kClient = std::tuple{
    cell_family("tollgate_client_requests_total",
                "Requests finished, by client, tenant and status class.", &ClientCells::requests,
                Export::kNonZero, SeriesLabels::kClient),
    cell_family("tollgate_client_tokens_total", "Tokens reported by backends, by client.",
                &ClientCells::tokens, Export::kNonZero, SeriesLabels::kClient),
    cell_family("tollgate_rate_limited_total",
                "Requests refused with 429 by an admission limit, by the limit's scope (client, "
                "tenant, deployment) and unit (tokens, requests).",
                &ClientCells::rate_limited, Export::kNonZero, SeriesLabels::kClient),
    cell_family("tollgate_usage_estimated_total",
                "Requests whose usage the gateway counted itself (a stream that ended without a "
                "usage event).",
                &ClientCells::usage_estimated, Export::kNonZero, SeriesLabels::kClient),
    cell_family("tollgate_charged_tokens_total",
                "Tokens charged to the admission buckets at settlement, by client.",
                &ClientCells::charged_tokens, Export::kNonZero, SeriesLabels::kClient),
    cell_family("tollgate_budget_refused_total",
                "Requests refused with 429 by a calendar budget, by the budget's scope (client, "
                "tenant), period (day, month) and unit (tokens, usd).",
                &ClientCells::budget_refused, Export::kNonZero, SeriesLabels::kClient),
    cell_family("tollgate_client_cost_usd_total",
                "What a client's requests cost by the deployments' price tables, in USD.",
                &ClientCells::cost_nano_usd, Export::kNonZero, SeriesLabels::kClient, 1e9),
};

// Backends (server/gateway.cpp, from the shared backend state).
inline constexpr FamilySpec<2> kBackendState{
    "tollgate_backend_state",
    "1 for the backend's current condition (available, throttled, breaker_open, "
    "breaker_half_open, probe_failed, saturated), 0 for the others.",
    MetricType::Gauge,
    {"backend", "state"}};
inline constexpr FamilySpec<1> kBackendInFlight{
    "tollgate_backend_in_flight_requests",
    "Requests in flight to the backend, across workers.",
    MetricType::Gauge,
    {"backend"}};
inline constexpr FamilySpec<1> kBackendRemainingTokens{
    "tollgate_backend_ratelimit_remaining_tokens",
    "x-ratelimit-remaining-tokens as last reported by the backend.",
    MetricType::Gauge,
    {"backend"}};
inline constexpr FamilySpec<1> kBackendRemainingRequests{
    "tollgate_backend_ratelimit_remaining_requests",
    "x-ratelimit-remaining-requests as last reported by the backend.",
    MetricType::Gauge,
    {"backend"}};
inline constexpr FamilySpec<1> kBackendUtilization{
    "tollgate_backend_utilization_ratio",
    "PTU utilization (azure-openai-deployment-utilization) as last reported; 1 = 100%.",
    MetricType::Gauge,
    {"backend"}};
inline constexpr FamilySpec<1> kBackendBreakerOpens{"tollgate_backend_breaker_opens_total",
                                                    "Times the backend's circuit breaker opened.",
                                                    MetricType::Counter,
                                                    {"backend"}};
inline constexpr FamilySpec<1> kBackendThrottled{
    "tollgate_backend_throttled_total",
    "429 answers that made the backend rest (throttled).",
    MetricType::Counter,
    {"backend"}};
inline constexpr FamilySpec<0> kCountCacheHits{
    "tollgate_token_count_cache_hits_total",
    "Chat messages whose prompt tokens came from the count cache (tokenizer.count_cache).",
    MetricType::Counter,
    {}};
inline constexpr FamilySpec<0> kCountCacheMisses{
    "tollgate_token_count_cache_misses_total",
    "Chat messages the count cache did not hold (counted, then memoized).",
    MetricType::Counter,
    {}};
inline constexpr FamilySpec<0> kCountCacheBytes{
    "tollgate_token_count_cache_bytes",
    "Bytes the count cache holds (messages and entries), at most tokenizer.count_cache.",
    MetricType::Gauge,
    {}};
inline constexpr FamilySpec<0> kAffinityEntries{
    "tollgate_affinity_entries",
    "Objects (responses, files, threads, ...) the gateway can route to the backend that created "
    "them.",
    MetricType::Gauge,
    {}};

// Priority classes and waiting rooms (cells of the deployment's "none" series, and the
// scheduler's queue depths), per deployment and class.
inline constexpr FamilySpec<2> kPriorityRequests{
    "tollgate_priority_requests_total",
    "Requests routed, by deployment and priority class.",
    MetricType::Counter,
    {"deployment", "class"}};
inline constexpr FamilySpec<2> kQueueDepth{
    "tollgate_queue_depth",
    "Requests waiting for capacity now, by deployment and priority class.",
    MetricType::Gauge,
    {"deployment", "class"}};
inline constexpr FamilySpec<2> kQueueDispatched{
    "tollgate_queue_dispatched_total",
    "Requests that waited for capacity and were then sent to a backend.",
    MetricType::Counter,
    {"deployment", "class"}};
inline constexpr FamilySpec<2> kQueueWait{
    "tollgate_queue_wait_seconds",
    "Time requests waited for capacity (dispatched, timed out or abandoned).",
    MetricType::Histogram,
    {"deployment", "class"}};
inline constexpr FamilySpec<3> kQueueShed{
    "tollgate_queue_shed_total",
    "Requests that could have waited for capacity but were answered without it: queue_full, "
    "deadline, unreachable (no backend recovers in time), client_gone.",
    MetricType::Counter,
    {"deployment", "class", "reason"}};

// Health checks (server/health.cpp).
inline constexpr FamilySpec<2> kHealthChecks{"tollgate_health_checks_total",
                                             "Active health-check probes by backend and result.",
                                             MetricType::Counter,
                                             {"backend", "result"}};

// Admission limits, budgets, keys and backend credentials (server/identity.cpp).
inline constexpr FamilySpec<3> kRateLimitAvailable{
    "tollgate_ratelimit_available",
    "Units an admission limit could admit now (tokens or requests; 0 while in debt), by scope "
    "(client, tenant, deployment) and name.",
    MetricType::Gauge,
    {"scope", "name", "unit"}};
inline constexpr FamilySpec<3> kRateLimitPerMinute{"tollgate_ratelimit_limit_per_minute",
                                                   "The admission limit's rate per minute.",
                                                   MetricType::Gauge,
                                                   {"scope", "name", "unit"}};
inline constexpr FamilySpec<4> kBudgetUsed{
    "tollgate_budget_used",
    "Use of a calendar budget in its current UTC period (tokens, or USD), by scope, name, "
    "period (day, month) and unit.",
    MetricType::Gauge,
    {"scope", "name", "period", "unit"}};
inline constexpr FamilySpec<4> kBudgetLimit{"tollgate_budget_limit",
                                            "A calendar budget's limit (tokens or USD).",
                                            MetricType::Gauge,
                                            {"scope", "name", "period", "unit"}};
inline constexpr FamilySpec<4> kBudgetWarning{
    "tollgate_budget_warning",
    "1 when a budget's use reached its warn_at share, else 0.",
    MetricType::Gauge,
    {"scope", "name", "period", "unit"}};
inline constexpr FamilySpec<1> kTokenRefreshFailures{
    "tollgate_backend_token_refresh_failures_total",
    "Failed attempts to obtain an Entra ID token for a backend.",
    MetricType::Counter,
    {"backend"}};
inline constexpr FamilySpec<0> kJwksFetchFailures{
    "tollgate_jwks_fetch_failures_total",
    "Failed JWKS fetches (the last good keys stay in use).",
    MetricType::Counter,
    {}};
inline constexpr FamilySpec<0> kClientKeys{
    "tollgate_client_keys",
    "Client API keys known to the gateway: configured and created at runtime, minus revoked ones "
    "(expired keys included until removed).",
    MetricType::Gauge,
    {}};

// Request bodies held in memory (server/body_budget.hpp, read by server/gateway.cpp).
inline constexpr FamilySpec<0> kRequestBufferedBytes{
    "tollgate_request_buffered_bytes",
    "Request body bytes the gateway holds now, all connections (bounded by "
    "server.limits.max_buffered_bytes).",
    MetricType::Gauge,
    {}};
inline constexpr FamilySpec<0> kRequestBufferFull{
    "tollgate_request_buffer_full_total",
    "Requests refused with 503 before their body was read because server.limits."
    "max_buffered_bytes was reached.",
    MetricType::Counter,
    {}};

// The usage ledger (its counters, read by server/gateway.cpp).
inline constexpr FamilySpec<0> kLedgerQueueDepth{
    "tollgate_ledger_queue_depth",
    "Usage records waiting to be written to the ledger.",
    MetricType::Gauge,
    {}};
inline constexpr FamilySpec<0> kLedgerWritten{"tollgate_ledger_records_written_total",
                                              "Usage records committed to the ledger.",
                                              MetricType::Counter,
                                              {}};
inline constexpr FamilySpec<0> kLedgerWriteErrors{
    "tollgate_ledger_write_errors_total",
    "Ledger transactions that failed (disk full, read-only, I/O errors); their records stay "
    "queued and are retried.",
    MetricType::Counter,
    {}};
inline constexpr FamilySpec<0> kLedgerObjectsDropped{
    "tollgate_ledger_dropped_object_changes_total",
    "Owner-record changes of the affinity table dropped because usage.max_buffered changes were "
    "already waiting for an unwritable ledger (those objects may be unknown after a restart).",
    MetricType::Counter,
    {}};
inline constexpr FamilySpec<0> kLedgerDropped{
    "tollgate_ledger_dropped_records_total",
    "Usage records dropped because usage.max_buffered records were already waiting for an "
    "unwritable ledger.",
    MetricType::Counter,
    {}};
inline constexpr FamilySpec<0> kLedgerWritable{
    "tollgate_ledger_writable",
    "1 when the last ledger write succeeded, 0 while writes fail.",
    MetricType::Gauge,
    {}};

// The fleet ledger's shipper (usage.postgres; read by server/gateway.cpp).
inline constexpr FamilySpec<0> kShipperUp{
    "tollgate_ledger_shipper_up",
    "1 while the last round trip of the usage shipper to PostgreSQL succeeded, else 0.",
    MetricType::Gauge,
    {}};
inline constexpr FamilySpec<0> kShipped{
    "tollgate_ledger_shipped_records_total",
    "Usage records shipped: held by PostgreSQL and marked shipped in the local spool.",
    MetricType::Counter,
    {}};
inline constexpr FamilySpec<0> kShipDuplicates{
    "tollgate_ledger_ship_duplicates_total",
    "Of the shipped records, those PostgreSQL already held (a statement whose answer was lost "
    "to a timeout, or a crash between its commit and the spool's mark); stored once all the same.",
    MetricType::Counter,
    {}};
inline constexpr FamilySpec<0> kShipBacklog{
    "tollgate_ledger_backlog_records",
    "Records in the local spool not yet shipped to PostgreSQL.", MetricType::Gauge, {}};
inline constexpr FamilySpec<0> kShipOldest{
    "tollgate_ledger_oldest_unshipped_seconds",
    "Age of the oldest record not yet shipped to PostgreSQL (0 when none waits).",
    MetricType::Gauge,
    {}};
inline constexpr FamilySpec<1> kShipErrors{
    "tollgate_ledger_ship_errors_total",
    "Failed shipping rounds by reason: connect, auth (credentials refused), timeout (no answer "
    "within usage.postgres.timeout), query (PostgreSQL refused the statement), spool (the local "
    "spool could not be read or marked).",
    MetricType::Counter,
    {"reason"}};
inline constexpr FamilySpec<0> kSpoolFull{
    "tollgate_ledger_spool_full",
    "1 while more than usage.postgres.max_backlog records wait for PostgreSQL (kept: the spool "
    "grows on disk).",
    MetricType::Gauge,
    {}};

inline constexpr FamilySpec<0> kClusterRedisUp{
    "tollgate_cluster_redis_up",
    "1 while every worker's connection to the cluster's Redis is up, else 0.", MetricType::Gauge, {}};
inline constexpr FamilySpec<0> kClusterRoundTrip{
    "tollgate_cluster_redis_round_trip_seconds",
    "Time from sending a call to the cluster's Redis to its reply.", MetricType::Histogram, {}};
inline constexpr FamilySpec<1> kClusterFailures{
    "tollgate_cluster_redis_failures_total",
    "Calls to (and connections with) the cluster's Redis that failed, by reason: timeout, "
    "connect, tls, auth, closed, protocol, overloaded.",
    MetricType::Counter,
    {"reason"}};
inline constexpr FamilySpec<0> kClusterReplicas{
    "tollgate_cluster_replicas",
    "Replicas of this gateway seen in the cluster's Redis in the last minute (heartbeats).",
    MetricType::Gauge, {}};
inline constexpr FamilySpec<0> kClusterUnsettled{
    "tollgate_cluster_unsettled",
    "Leases of shared limits and budgets holding units, and flushes and releases not yet applied "
    "in the cluster's Redis (kept until it answers again).",
    MetricType::Gauge, {}};

}  // namespace families

/// One sample: a family with no labels and one value.
template <std::size_t N>
requires(N == 0) prometheus::MetricFamily single(const FamilySpec<N>& spec, double value) {
  FamilyBuilder<0> b(spec);
  b.add({}, value);
  return b.take();
}

/// A priority class of a deployment as the scrape sees it (names from the config, depth from
/// the scheduler).
struct PriorityClassView {
  std::string_view name;
  bool waits = false;  // max_queue_wait > 0: the queue families are exported
  std::size_t depth = 0;
};
struct PriorityView {
  std::string_view deployment;
  std::uint32_t series = 0;  // the deployment's "none" series
  std::vector<PriorityClassView> classes;
};

/// Appends the priority families (families::kPriorityRequests .. kQueueShed) for `views`.
/// Thread: control thread.
void append_priority_families(const SeriesRegistry& reg, std::span<const PriorityView> views,
                              std::vector<prometheus::MetricFamily>& out);

/// Appends the cluster families (families::kClusterRedisUp .. kClusterUnsettled) from the
/// workers' cells and the replicas seen. Thread: control thread.
void append_cluster_families(const SeriesRegistry& reg, std::size_t replicas_seen,
                             std::vector<prometheus::MetricFamily>& out);

extern template class FamilyBuilder<0>;
extern template class FamilyBuilder<1>;
extern template class FamilyBuilder<2>;
extern template class FamilyBuilder<3>;
extern template class FamilyBuilder<4>;

}  // namespace tollgate::metrics

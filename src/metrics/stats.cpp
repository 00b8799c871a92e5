#include "tollgate/metrics/stats.hpp"

#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <tuple>

namespace tollgate::metrics {

void Histogram::observe_micros(std::int64_t us) noexcept {
  if (us < 0) us = 0;
  double s = static_cast<double>(us) / 1e6;
  auto it = std::lower_bound(kLatencyBounds.begin(), kLatencyBounds.end(), s);
  buckets_[static_cast<std::size_t>(it - kLatencyBounds.begin())].add();
  sum_us_.add(static_cast<std::uint64_t>(us));
}

StatusClass status_class(int status) {
  if (status >= 100 && status < 600) return static_cast<StatusClass>(status / 100 - 1);
  return StatusClass::kNone;
}

std::string_view to_string(StatusClass c) {
  static constexpr std::string_view kNames[] = {"1xx", "2xx", "3xx", "4xx", "5xx", "none"};
  return kNames[static_cast<std::size_t>(c)];
}

std::string_view to_string(UpstreamError e) {
  static constexpr std::string_view kNames[] = {
      "resolve", "connect", "connect_timeout", "tls",      "write",
      "first_byte_timeout", "idle_timeout", "reset", "protocol", "client_gone", "credential"};
  return kNames[static_cast<std::size_t>(e)];
}

std::string_view to_string(RetryReason r) {
  static constexpr std::string_view kNames[] = {"throttled", "server_error", "timeout", "connect"};
  return kNames[static_cast<std::size_t>(r)];
}

std::string_view to_string(TokenType t) {
  static constexpr std::string_view kNames[] = {"prompt", "completion", "cached", "reasoning"};
  return kNames[static_cast<std::size_t>(t)];
}

void WorkerStats::ensure(std::uint32_t count) {
  std::uint32_t blocks = (count + kBlockSize - 1) >> kBlockShift;
  for (std::uint32_t b = 0; b < blocks && b < kMaxBlocks; ++b) {
    if (!blocks_[b]) blocks_[b] = std::make_unique<RouteCells[]>(kBlockSize);
  }
}

std::uint32_t SeriesRegistry::intern(std::string_view deployment, std::string_view backend) {
  std::string key;
  key.reserve(deployment.size() + backend.size() + 1);
  key.append(deployment).append(1, '\0').append(backend);
  if (auto it = index_.find(key); it != index_.end()) return it->second;
  if (labels_.size() >= std::size_t{kMaxBlocks} * kBlockSize) {
    return std::numeric_limits<std::uint32_t>::max();
  }
  auto id = static_cast<std::uint32_t>(labels_.size());
  labels_.emplace_back(std::string(deployment), std::string(backend));
  tiers_.push_back(0);
  index_.emplace(std::move(key), id);
  for (auto* w : workers_) w->ensure(id + 1);
  return id;
}

std::uint32_t SeriesRegistry::intern_client(std::string_view client, std::string_view tenant) {
  std::string key;
  key.append(client).append(1, '\0').append(tenant);
  if (auto it = client_index_.find(key); it != client_index_.end()) return it->second;
  if (client_labels_.size() >= kMaxClientSeries - 1) {  // the last id: every client beyond
    if (client_labels_.size() == kMaxClientSeries - 1) client_labels_.emplace_back("other", "other");
    return kMaxClientSeries - 1;
  }
  auto id = static_cast<std::uint32_t>(client_labels_.size());
  client_labels_.emplace_back(std::string(client), std::string(tenant));
  client_index_.emplace(std::move(key), id);
  return id;
}

void SeriesRegistry::add_worker(WorkerStats* w) {
  w->ensure(size());
  workers_.push_back(w);
}

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

MetricFamily family(std::string name, std::string help, MetricType type) {
  MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  return f;
}

void add_counter(MetricFamily& f, std::vector<ClientMetric::Label> labels, double value) {
  ClientMetric m;
  m.label = std::move(labels);
  m.counter.value = value;
  f.metric.push_back(std::move(m));
}

void add_histogram(MetricFamily& f, std::vector<ClientMetric::Label> labels, const SeriesRegistry& reg,
                   std::uint32_t id, const std::function<const Histogram&(const RouteCells&)>& get) {
  ClientMetric m;
  m.label = std::move(labels);
  std::array<std::uint64_t, kLatencyBounds.size() + 1> counts{};
  std::uint64_t sum_us = 0;
  for (auto* w : reg.workers()) {
    if (const auto* cells = w->route_if(id)) {
      const Histogram& h = get(*cells);
      for (std::size_t i = 0; i < counts.size(); ++i) counts[i] += h.bucket(i);
      sum_us += h.sum_micros();
    }
  }
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    cumulative += counts[i];
    ClientMetric::Bucket b;
    b.cumulative_count = cumulative;
    b.upper_bound = i < kLatencyBounds.size() ? kLatencyBounds[i] : std::numeric_limits<double>::infinity();
    m.histogram.bucket.push_back(b);
  }
  m.histogram.sample_count = cumulative;
  m.histogram.sample_sum = static_cast<double>(sum_us) / 1e6;
  f.metric.push_back(std::move(m));
}

std::uint64_t sum_counter(const SeriesRegistry& reg, std::uint32_t id,
                          const std::function<const Counter&(const RouteCells&)>& get) {
  std::uint64_t n = 0;
  for (auto* w : reg.workers()) {
    if (const auto* cells = w->route_if(id)) n += get(*cells).value();
  }
  return n;
}

std::string_view to_string(ShedReason r) {
  static constexpr std::string_view kNames[] = {"queue_full", "deadline", "unreachable", "client_gone"};
  return kNames[static_cast<std::size_t>(r)];
}

void add_gauge(MetricFamily& f, std::vector<ClientMetric::Label> labels, double value) {
  ClientMetric m;
  m.label = std::move(labels);
  m.gauge.value = value;
  f.metric.push_back(std::move(m));
}

namespace {

ClientMetric route_metric(const std::pair<std::string, std::string>& labels) {
  ClientMetric m;
  m.label = {{"deployment", labels.first}, {"backend", labels.second}};
  return m;
}

template <typename Get>
ClientMetric histogram_metric(const SeriesRegistry& reg, std::uint32_t id, Get get) {
  MetricFamily f;
  add_histogram(f, route_metric(reg.labels(id)).label, reg, id, get);
  return std::move(f.metric.front());
}

}  // namespace

std::string render_metrics(const SeriesRegistry& reg, const ControlStats& control,
                           std::vector<MetricFamily> extra) {
  std::vector<MetricFamily> out;
  auto requests = family("tollgate_requests_total",
                         "Requests handled, by deployment, backend and status class "
                         "(code=\"none\": no response status was sent).",
                         MetricType::Counter);
  auto duration = family("tollgate_request_duration_seconds",
                         "Time from the request's arrival to the end of its response.",
                         MetricType::Histogram);
  auto ttfb = family("tollgate_time_to_first_byte_seconds",
                     "Time from the request's arrival to the first response byte from the backend.",
                     MetricType::Histogram);
  auto tokens = family("tollgate_tokens_total", "Tokens reported by backends, by type.",
                       MetricType::Counter);
  auto errors = family("tollgate_upstream_errors_total", "Upstream failures by reason.",
                       MetricType::Counter);
  auto missing = family("tollgate_usage_missing_total",
                        "Successful inference responses that carried no usage.",
                        MetricType::Counter);
  auto retries = family("tollgate_retries_total",
                        "Attempts that failed on a backend and were retried on another, by the "
                        "failed backend and the reason.",
                        MetricType::Counter);
  auto spillovers = family("tollgate_spillovers_total",
                           "Requests served by a lower-priority tier because the tiers before it "
                           "could not take them (tiers are numbered from 1).",
                           MetricType::Counter);
  auto no_backend = family("tollgate_no_backend_available_total",
                           "Requests answered by the gateway because no backend could take them "
                           "(429: capacity returns soon; 503: it does not).",
                           MetricType::Counter);
  auto budget = family("tollgate_retry_budget_exhausted_total",
                       "Retries not made because the deployment's retry budget was spent.",
                       MetricType::Counter);
  auto cost = family("tollgate_cost_usd_total",
                     "What requests cost by the deployment's price table, in USD.",
                     MetricType::Counter);
  // (deployment, from tier, to tier) -> count, summed over the serving backends.
  std::map<std::tuple<std::string, std::uint32_t, std::uint32_t>, std::uint64_t> spills;
  for (std::uint32_t id = 0; id < reg.size(); ++id) {
    std::array<std::uint64_t, static_cast<std::size_t>(StatusClass::kCount)> req{};
    std::array<std::uint64_t, static_cast<std::size_t>(TokenType::kCount)> tok{};
    std::array<std::uint64_t, static_cast<std::size_t>(UpstreamError::kCount)> err{};
    std::uint64_t miss = 0;
    std::array<std::uint64_t, static_cast<std::size_t>(RetryReason::kCount)> retry{};
    std::array<std::uint64_t, kMaxTiers> spill{};
    std::array<std::uint64_t, 2> nob{};
    std::uint64_t exhausted = 0, nano_usd = 0;
    for (auto* w : reg.workers()) {
      const auto* cells = w->route_if(id);
      if (!cells) continue;
      nano_usd += cells->cost_nano_usd.value();
      for (std::size_t i = 0; i < retry.size(); ++i) retry[i] += cells->retries[i].value();
      for (std::size_t i = 0; i < spill.size(); ++i) spill[i] += cells->spilled_from[i].value();
      for (std::size_t i = 0; i < nob.size(); ++i) nob[i] += cells->no_backend[i].value();
      exhausted += cells->budget_exhausted.value();
      for (std::size_t i = 0; i < req.size(); ++i) req[i] += cells->requests[i].value();
      for (std::size_t i = 0; i < tok.size(); ++i) tok[i] += cells->tokens[i].value();
      for (std::size_t i = 0; i < err.size(); ++i) err[i] += cells->upstream_errors[i].value();
      miss += cells->usage_missing.value();
    }
    // A route never used exports nothing. Errors count as use: they are recorded before the
    // client's answer is written, the request itself only once it has ended.
    const auto& labels = reg.labels(id);
    for (std::size_t i = 0; i < retry.size(); ++i) {
      if (retry[i] == 0) continue;
      auto m = route_metric(labels);
      m.label.push_back({"reason", std::string(to_string(static_cast<RetryReason>(i)))});
      m.counter.value = static_cast<double>(retry[i]);
      retries.metric.push_back(std::move(m));
    }
    for (std::size_t i = 0; i < spill.size(); ++i) {
      if (spill[i] != 0) {
        spills[{labels.first, static_cast<std::uint32_t>(i), reg.tier(id)}] += spill[i];
      }
    }
    for (std::size_t i = 0; i < nob.size(); ++i) {
      if (nob[i] == 0) continue;
      add_counter(no_backend, {{"deployment", labels.first}, {"code", i == 0 ? "429" : "503"}},
                  static_cast<double>(nob[i]));
    }
    if (exhausted != 0) {
      add_counter(budget, {{"deployment", labels.first}}, static_cast<double>(exhausted));
    }
    std::uint64_t used = miss;
    for (auto v : req) used += v;
    for (auto v : err) used += v;
    for (auto v : tok) used += v;
    if (used == 0) continue;
    for (std::size_t i = 0; i < req.size(); ++i) {
      if (req[i] == 0) continue;
      auto m = route_metric(reg.labels(id));
      m.label.push_back({"code", std::string(to_string(static_cast<StatusClass>(i)))});
      m.counter.value = static_cast<double>(req[i]);
      requests.metric.push_back(std::move(m));
    }
    for (std::size_t i = 0; i < tok.size(); ++i) {
      auto m = route_metric(reg.labels(id));
      m.label.push_back({"type", std::string(to_string(static_cast<TokenType>(i)))});
      m.counter.value = static_cast<double>(tok[i]);
      tokens.metric.push_back(std::move(m));
    }
    for (std::size_t i = 0; i < err.size(); ++i) {
      if (err[i] == 0) continue;
      auto m = route_metric(reg.labels(id));
      m.label.push_back({"reason", std::string(to_string(static_cast<UpstreamError>(i)))});
      m.counter.value = static_cast<double>(err[i]);
      errors.metric.push_back(std::move(m));
    }
    auto mm = route_metric(reg.labels(id));
    mm.counter.value = static_cast<double>(miss);
    missing.metric.push_back(std::move(mm));
    if (nano_usd != 0) {
      auto cm = route_metric(reg.labels(id));
      cm.counter.value = static_cast<double>(nano_usd) / 1e9;
      cost.metric.push_back(std::move(cm));
    }
    duration.metric.push_back(
        histogram_metric(reg, id, [](const RouteCells& c) -> const Histogram& { return c.duration; }));
    ttfb.metric.push_back(
        histogram_metric(reg, id, [](const RouteCells& c) -> const Histogram& { return c.ttfb; }));
  }
  for (const auto& [key, count] : spills) {
    add_counter(spillovers, {{"deployment", std::get<0>(key)},
                             {"from_tier", std::to_string(std::get<1>(key) + 1)},
                             {"to_tier", std::to_string(std::get<2>(key) + 1)}},
                static_cast<double>(count));
  }
  for (auto* f : {&requests, &duration, &ttfb, &tokens, &errors, &missing, &retries, &spillovers,
                  &no_backend, &budget, &cost}) {
    out.push_back(std::move(*f));
  }

  std::int64_t in_flight = 0, open = 0, idle = 0, reservations = 0;
  std::uint64_t conns = 0, connects = 0;
  for (auto* w : reg.workers()) {
    in_flight += w->in_flight.value();
    reservations += w->reservations.value();
    open += w->open_connections.value();
    idle += w->upstream_idle.value();
    conns += w->connections_total.value();
    connects += w->upstream_connects.value();
  }
  auto gauge = [&](std::string name, std::string help, double v) {
    auto f = family(std::move(name), std::move(help), MetricType::Gauge);
    ClientMetric m;
    m.gauge.value = v;
    f.metric.push_back(std::move(m));
    out.push_back(std::move(f));
  };
  auto counter = [&](std::string name, std::string help, double v,
                     std::vector<ClientMetric::Label> labels = {}) {
    auto f = family(std::move(name), std::move(help), MetricType::Counter);
    ClientMetric m;
    m.label = std::move(labels);
    m.counter.value = v;
    f.metric.push_back(std::move(m));
    out.push_back(std::move(f));
  };
  gauge("tollgate_in_flight_requests", "Requests being handled now.", static_cast<double>(in_flight));
  gauge("tollgate_open_connections", "Open client connections.", static_cast<double>(open));
  gauge("tollgate_reservations_outstanding",
        "Admission reservations (tokens held from limits and budgets) not yet settled.",
        static_cast<double>(reservations));
  counter("tollgate_connections_total", "Client connections accepted.", static_cast<double>(conns));
  gauge("tollgate_upstream_idle_connections", "Idle pooled connections to backends.",
        static_cast<double>(idle));
  counter("tollgate_upstream_connections_total", "Connections opened to backends.",
          static_cast<double>(connects));
  {
    auto f = family("tollgate_config_reloads_total", "Configuration reloads by result.",
                    MetricType::Counter);
    ClientMetric ok, failed;
    ok.label = {{"result", "success"}};
    ok.counter.value = static_cast<double>(control.reloads_ok.value());
    failed.label = {{"result", "failure"}};
    failed.counter.value = static_cast<double>(control.reloads_failed.value());
    f.metric = {ok, failed};
    out.push_back(std::move(f));
  }
  gauge("tollgate_config_last_reload_success_timestamp_seconds",
        "Unix time of the last successful configuration load.",
        control.last_reload_ok_time.load(std::memory_order_relaxed));
  {
    auto f = family("tollgate_build_info", "Build information.", MetricType::Gauge);
    ClientMetric m;
    m.label = {{"version", TOLLGATE_VERSION}};
    m.gauge.value = 1;
    f.metric.push_back(std::move(m));
    out.push_back(std::move(f));
  }
  {
    auto creq = family("tollgate_client_requests_total",
                       "Requests finished, by client, tenant and status class.", MetricType::Counter);
    auto ctok = family("tollgate_client_tokens_total", "Tokens reported by backends, by client.",
                       MetricType::Counter);
    auto climited = family("tollgate_rate_limited_total",
                           "Requests refused with 429 by an admission limit, by the limit's scope "
                           "(client, tenant, deployment) and unit (tokens, requests).",
                           MetricType::Counter);
    auto cest = family("tollgate_usage_estimated_total",
                       "Requests whose usage the gateway counted itself (a stream that ended "
                       "without a usage event).",
                       MetricType::Counter);
    auto ccharged = family("tollgate_charged_tokens_total",
                           "Tokens charged to the admission buckets at settlement, by client.",
                           MetricType::Counter);
    auto cbudget = family("tollgate_budget_refused_total",
                          "Requests refused with 429 by a calendar budget, by the budget's scope "
                          "(client, tenant), period (day, month) and unit (tokens, usd).",
                          MetricType::Counter);
    auto ccost = family("tollgate_client_cost_usd_total",
                        "What a client's requests cost by the deployments' price tables, in USD.",
                        MetricType::Counter);
    for (std::uint32_t id = 0; id < reg.client_count(); ++id) {
      const auto& [client, tenant] = reg.client_labels(id);
      std::array<std::uint64_t, static_cast<std::size_t>(StatusClass::kCount)> req{};
      std::array<std::uint64_t, static_cast<std::size_t>(TokenType::kCount)> tok{};
      std::array<std::uint64_t, 6> limited{};
      std::uint64_t estimated = 0, charged = 0, nano_usd = 0;
      std::array<std::uint64_t, 8> refused{};
      for (auto* w : reg.workers()) {
        const auto& cells = w->client(id);
        for (std::size_t i = 0; i < refused.size(); ++i) refused[i] += cells.budget_refused[i].value();
        nano_usd += cells.cost_nano_usd.value();
        for (std::size_t i = 0; i < req.size(); ++i) req[i] += cells.requests[i].value();
        for (std::size_t i = 0; i < tok.size(); ++i) tok[i] += cells.tokens[i].value();
        for (std::size_t i = 0; i < limited.size(); ++i) limited[i] += cells.rate_limited[i].value();
        estimated += cells.usage_estimated.value();
        charged += cells.charged_tokens.value();
      }
      static constexpr const char* kScopes[] = {"client", "tenant", "deployment"};
      for (std::size_t i = 0; i < limited.size(); ++i) {
        if (limited[i] == 0) continue;
        add_counter(climited, {{"client", client}, {"tenant", tenant}, {"scope", kScopes[i / 2]},
                               {"limit", i % 2 == 0 ? "tokens" : "requests"}},
                    static_cast<double>(limited[i]));
      }
      for (std::size_t i = 0; i < refused.size(); ++i) {
        if (refused[i] == 0) continue;
        add_counter(cbudget, {{"client", client}, {"tenant", tenant},
                              {"scope", i / 4 == 0 ? "client" : "tenant"},
                              {"period", (i / 2) % 2 == 0 ? "day" : "month"},
                              {"unit", i % 2 == 0 ? "tokens" : "usd"}},
                    static_cast<double>(refused[i]));
      }
      if (nano_usd != 0) {
        add_counter(ccost, {{"client", client}, {"tenant", tenant}}, static_cast<double>(nano_usd) / 1e9);
      }
      if (estimated != 0) {
        add_counter(cest, {{"client", client}, {"tenant", tenant}}, static_cast<double>(estimated));
      }
      if (charged != 0) {
        add_counter(ccharged, {{"client", client}, {"tenant", tenant}}, static_cast<double>(charged));
      }
      for (std::size_t i = 0; i < req.size(); ++i) {
        if (req[i] == 0) continue;
        add_counter(creq, {{"client", client}, {"tenant", tenant},
                           {"code", std::string(to_string(static_cast<StatusClass>(i)))}},
                    static_cast<double>(req[i]));
      }
      for (std::size_t i = 0; i < tok.size(); ++i) {
        if (tok[i] == 0) continue;
        add_counter(ctok, {{"client", client}, {"tenant", tenant},
                           {"type", std::string(to_string(static_cast<TokenType>(i)))}},
                    static_cast<double>(tok[i]));
      }
    }
    out.push_back(std::move(creq));
    out.push_back(std::move(ctok));
    out.push_back(std::move(climited));
    out.push_back(std::move(cest));
    out.push_back(std::move(ccharged));
    out.push_back(std::move(cbudget));
    out.push_back(std::move(ccost));
  }
  for (auto& f : extra) out.push_back(std::move(f));
  return prometheus::TextSerializer().Serialize(out);
}

}  // namespace tollgate::metrics

// The scrape: sums every cell family of families.hpp over the workers and serializes them.
#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <limits>
#include <map>
#include <string>
#include <tuple>
#include <type_traits>

#include "tollgate/metrics/families.hpp"

namespace tollgate::metrics {

using prometheus::ClientMetric;
using prometheus::MetricFamily;

void HistogramSum::add(const Histogram& h) noexcept {
  for (std::size_t i = 0; i < counts.size(); ++i) counts[i] += h.bucket(i);
  sum_us += h.sum_micros();
}

std::uint64_t HistogramSum::count() const noexcept {
  std::uint64_t n = 0;
  for (auto c : counts) n += c;
  return n;
}

namespace {

MetricFamily start(std::string_view name, std::string_view help, MetricType type) {
  MetricFamily f;
  f.name = std::string(name);
  f.help = std::string(help);
  f.type = type;
  return f;
}

void set_value(ClientMetric& m, MetricType type, double value) {
  if (type == MetricType::Gauge) {
    m.gauge.value = value;
  } else {
    m.counter.value = value;
  }
}

void set_value(ClientMetric& m, const HistogramSum& h) {
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < h.counts.size(); ++i) {
    cumulative += h.counts[i];
    ClientMetric::Bucket b;
    b.cumulative_count = cumulative;
    b.upper_bound =
        i < kLatencyBounds.size() ? kLatencyBounds[i] : std::numeric_limits<double>::infinity();
    m.histogram.bucket.push_back(b);
  }
  m.histogram.sample_count = cumulative;
  m.histogram.sample_sum = static_cast<double>(h.sum_us) / 1e6;
}

// ---- Cells: a plain cell is an array of one, without labels.

template <class M>
struct Shape {  // Counter, Gauge, Histogram
  using Cell = M;
  static constexpr std::size_t kSize = 1;
  static const Cell& cell(const M& m, std::size_t) { return m; }
  static void labels(std::size_t, std::vector<ClientMetric::Label>&) {}
};

template <class C, class... L>
struct Shape<CellArray<C, L...>> {
  using Cell = C;
  using Array = CellArray<C, L...>;
  static constexpr std::size_t kSize = Array::kSize;
  static const Cell& cell(const Array& m, std::size_t i) { return m.flat(i); }
  static void labels(std::size_t i, std::vector<ClientMetric::Label>& out) {
    auto values = Array::value_names(i);
    for (std::size_t d = 0; d < Array::kLabels; ++d) {
      out.push_back({std::string(Array::kNames[d]), std::string(values[d])});
    }
  }
};

template <class Cell>
constexpr MetricType type_of() {
  if constexpr (std::is_same_v<Cell, Histogram>) {
    return MetricType::Histogram;
  } else if constexpr (std::is_same_v<Cell, Gauge>) {
    return MetricType::Gauge;
  } else {
    static_assert(std::is_same_v<Cell, Counter>);
    return MetricType::Counter;
  }
}

template <class Cell>
using SumOf = std::conditional_t<std::is_same_v<Cell, Histogram>, HistogramSum, std::uint64_t>;

void accumulate(std::uint64_t& sum, const Counter& c) {
  sum += c.value();
}
void accumulate(HistogramSum& sum, const Histogram& h) {
  sum.add(h);
}
bool is_zero(std::uint64_t v) {
  return v == 0;
}
bool is_zero(const HistogramSum& h) {
  return h.count() == 0;
}

// ---- Series: routes (cells allocated in blocks) and clients.

const RouteCells* cells_of(const WorkerStats& w, std::uint32_t id, const RouteCells*) {
  return w.route_if(id);
}
const ClientCells* cells_of(const WorkerStats& w, std::uint32_t id, const ClientCells*) {
  return &w.client(id);
}
std::uint32_t series_count(const SeriesRegistry& reg, const RouteCells*) {
  return reg.size();
}
std::uint32_t series_count(const SeriesRegistry& reg, const ClientCells*) {
  return reg.client_count();
}

std::vector<ClientMetric::Label> series_labels(const SeriesRegistry& reg, SeriesLabels kind,
                                               std::uint32_t id) {
  switch (kind) {
    case SeriesLabels::kRoute:
      return {{"deployment", reg.labels(id).first}, {"backend", reg.labels(id).second}};
    case SeriesLabels::kDeployment:
      return {{"deployment", reg.labels(id).first}};
    case SeriesLabels::kClient:
      return {{"client", reg.client_labels(id).first}, {"tenant", reg.client_labels(id).second}};
  }
  return {};
}

/// `member` of series `id`, summed over every worker, one sum per cell.
template <class Cells, class Member>
auto sum_series(const SeriesRegistry& reg, std::uint32_t id, Member Cells::*member) {
  using S = Shape<Member>;
  std::array<SumOf<typename S::Cell>, S::kSize> sums{};
  for (const auto* w : reg.workers()) {
    const Cells* cells = cells_of(*w, id, static_cast<const Cells*>(nullptr));
    if (!cells) continue;
    for (std::size_t i = 0; i < S::kSize; ++i) accumulate(sums[i], S::cell(cells->*member, i));
  }
  return sums;
}

// ---- Which series are in use (see Export).

template <class Cells, class Member>
void mark_use(const CellFamily<Cells, Member>& e, const SeriesRegistry& reg,
              std::vector<char>& used) {
  if (e.show == Export::kNonZero) return;
  for (std::uint32_t id = 0; id < used.size(); ++id) {
    if (used[id]) continue;
    for (const auto& s : sum_series(reg, id, e.member)) {
      if (!is_zero(s)) used[id] = 1;
    }
  }
}
void mark_use(const SpilloverFamily&, const SeriesRegistry&, std::vector<char>&) {}

// ---- One family per table entry.

template <class Cells, class Member>
void append(const CellFamily<Cells, Member>& e, const SeriesRegistry& reg,
            const std::vector<char>& used, std::vector<MetricFamily>& out) {
  using S = Shape<Member>;
  auto f = start(e.name, e.help, type_of<typename S::Cell>());
  for (std::uint32_t id = 0; id < used.size(); ++id) {
    if (e.show != Export::kNonZero && !used[id]) continue;
    auto sums = sum_series(reg, id, e.member);
    for (std::size_t i = 0; i < S::kSize; ++i) {
      if (e.show != Export::kAllOfUsed && is_zero(sums[i])) continue;
      ClientMetric m;
      m.label = series_labels(reg, e.series, id);
      S::labels(i, m.label);
      if constexpr (std::is_same_v<typename S::Cell, Histogram>) {
        set_value(m, sums[i]);
      } else {
        set_value(m, f.type, static_cast<double>(sums[i]) / e.per_unit);
      }
      f.metric.push_back(std::move(m));
    }
  }
  out.push_back(std::move(f));
}

void append(const SpilloverFamily& e, const SeriesRegistry& reg, const std::vector<char>& used,
            std::vector<MetricFamily>& out) {
  // (deployment, from tier, to tier) -> count, summed over the serving backends.
  std::map<std::tuple<std::string, std::size_t, std::uint32_t>, std::uint64_t> spills;
  for (std::uint32_t id = 0; id < used.size(); ++id) {
    auto sums = sum_series(reg, id, &RouteCells::spilled_from);
    for (std::size_t i = 0; i < sums.size(); ++i) {
      if (sums[i] != 0) spills[{reg.labels(id).first, i, reg.tier(id)}] += sums[i];
    }
  }
  FamilyBuilder<3> f(e.spec);
  for (const auto& [key, count] : spills) {
    const auto& [deployment, from, to] = key;
    f.add({deployment, std::to_string(from + 1), std::to_string(to + 1)},
          static_cast<double>(count));
  }
  out.push_back(f.take());
}

template <class Member>
void append(const WorkerFamily<Member>& e, const SeriesRegistry& reg,
            std::vector<MetricFamily>& out) {
  using S = Shape<Member>;
  using Cell = typename S::Cell;
  auto f = start(e.name, e.help, type_of<Cell>());
  for (std::size_t i = 0; i < S::kSize; ++i) {
    decltype(Cell{}.value()) sum = 0;
    for (const auto* w : reg.workers()) sum += S::cell(w->*e.member, i).value();
    ClientMetric m;
    S::labels(i, m.label);
    set_value(m, f.type, static_cast<double>(sum));
    f.metric.push_back(std::move(m));
  }
  out.push_back(std::move(f));
}

/// Every family of a table of cell families, in table order.
template <class Cells, class Table>
void append_table(const Table& table, const SeriesRegistry& reg, std::vector<MetricFamily>& out) {
  std::vector<char> used(series_count(reg, static_cast<const Cells*>(nullptr)), 0);
  std::apply([&](const auto&... e) { (mark_use(e, reg, used), ...); }, table);
  std::apply([&](const auto&... e) { (append(e, reg, used, out), ...); }, table);
}

void append_control(const ControlStats& control, std::vector<MetricFamily>& out) {
  FamilyBuilder<1> reloads(families::kConfigReloads);
  reloads.add({"success"}, static_cast<double>(control.reloads_ok.value()));
  reloads.add({"failure"}, static_cast<double>(control.reloads_failed.value()));
  out.push_back(reloads.take());
  out.push_back(single(families::kConfigLastReload,
                       control.last_reload_ok_time.load(std::memory_order_relaxed)));
  FamilyBuilder<1> build(families::kBuildInfo);
  build.add({TOLLGATE_VERSION}, 1);
  out.push_back(build.take());
}

/// The sum over workers of one cell of a route series chosen by `get`.
template <class Get>
auto sum_route(const SeriesRegistry& reg, std::uint32_t id, Get get) {
  using Cell = std::remove_cvref_t<decltype(get(std::declval<const RouteCells&>()))>;
  SumOf<Cell> sum{};
  for (const auto* w : reg.workers()) {
    if (const auto* cells = w->route_if(id)) accumulate(sum, get(*cells));
  }
  return sum;
}

}  // namespace

template <std::size_t N>
FamilyBuilder<N>::FamilyBuilder(const FamilySpec<N>& spec)
    : spec_(spec), family_(start(spec.name, spec.help, spec.type)) {}

template <std::size_t N>
void FamilyBuilder<N>::add(const std::array<std::string_view, N>& values, double value) {
  ClientMetric m;
  for (std::size_t i = 0; i < N; ++i) {
    m.label.push_back({std::string(spec_.labels[i]), std::string(values[i])});
  }
  set_value(m, spec_.type, value);
  family_.metric.push_back(std::move(m));
}

template <std::size_t N>
void FamilyBuilder<N>::add(const std::array<std::string_view, N>& values, const HistogramSum& h) {
  ClientMetric m;
  for (std::size_t i = 0; i < N; ++i) {
    m.label.push_back({std::string(spec_.labels[i]), std::string(values[i])});
  }
  set_value(m, h);
  family_.metric.push_back(std::move(m));
}

template class FamilyBuilder<0>;
template class FamilyBuilder<1>;
template class FamilyBuilder<2>;
template class FamilyBuilder<3>;
template class FamilyBuilder<4>;

void append_cluster_families(const SeriesRegistry& reg, std::size_t replicas_seen,
                             std::vector<MetricFamily>& out) {
  std::int64_t up = 0, unsettled = 0;
  HistogramSum rtt;
  FamilyBuilder<1> failures(families::kClusterFailures);
  std::array<std::uint64_t, static_cast<std::size_t>(RedisError::kCount)> failed{};
  for (const auto* w : reg.workers()) {
    up += w->cluster_up.value() > 0 ? 1 : 0;
    unsettled += w->cluster_unsettled.value();
    rtt.add(w->cluster_round_trip);
    for (std::size_t i = 0; i < failed.size(); ++i) failed[i] += w->cluster_failures.flat(i).value();
  }
  auto workers = static_cast<std::int64_t>(reg.workers().size());
  out.push_back(single(families::kClusterRedisUp, workers > 0 && up == workers ? 1 : 0));
  FamilyBuilder<0> round_trip(families::kClusterRoundTrip);
  round_trip.add({}, rtt);
  out.push_back(round_trip.take());
  for (std::size_t i = 0; i < failed.size(); ++i) {
    failures.add({to_string(static_cast<RedisError>(i))}, static_cast<double>(failed[i]));
  }
  out.push_back(failures.take());
  out.push_back(single(families::kClusterReplicas, static_cast<double>(replicas_seen)));
  out.push_back(single(families::kClusterUnsettled, static_cast<double>(unsettled)));
}

void append_priority_families(const SeriesRegistry& reg, std::span<const PriorityView> views,
                              std::vector<MetricFamily>& out) {
  FamilyBuilder<2> requests(families::kPriorityRequests);
  FamilyBuilder<2> depth(families::kQueueDepth);
  FamilyBuilder<2> dispatched(families::kQueueDispatched);
  FamilyBuilder<2> wait(families::kQueueWait);
  FamilyBuilder<3> shed(families::kQueueShed);
  for (const auto& v : views) {
    for (std::size_t k = 0; k < v.classes.size() && k < kMaxClasses; ++k) {
      const auto& c = v.classes[k];
      ClassRank rank{k};
      std::array<std::string_view, 2> labels{v.deployment, c.name};
      auto routed = sum_route(reg, v.series, [rank](const RouteCells& x) -> const Counter& {
        return x.class_requests[rank];
      });
      if (routed != 0) requests.add(labels, static_cast<double>(routed));
      if (!c.waits) continue;  // this class never waits
      depth.add(labels, static_cast<double>(c.depth));
      dispatched.add(labels, static_cast<double>(sum_route(
                                 reg, v.series, [rank](const RouteCells& x) -> const Counter& {
                                   return x.dispatched[rank];
                                 })));
      wait.add(labels, sum_route(reg, v.series, [rank](const RouteCells& x) -> const Histogram& {
                 return x.queue_wait[rank];
               }));
      for (std::size_t r = 0; r < kLabelSize<ShedReason>; ++r) {
        auto reason = static_cast<ShedReason>(r);
        auto n = sum_route(reg, v.series, [rank, reason](const RouteCells& x) -> const Counter& {
          return x.shed.at(rank, reason);
        });
        shed.add({v.deployment, c.name, to_string(reason)}, static_cast<double>(n));
      }
    }
  }
  for (auto* f : {&requests, &depth, &dispatched, &wait}) out.push_back(f->take());
  out.push_back(shed.take());
}

std::string render_metrics(const SeriesRegistry& reg, const ControlStats& control,
                           std::vector<MetricFamily> extra) {
  std::vector<MetricFamily> out;
  append_table<RouteCells>(families::kRoute, reg, out);
  std::apply([&](const auto&... e) { (append(e, reg, out), ...); }, families::kWorker);
  append_control(control, out);
  append_table<ClientCells>(families::kClient, reg, out);
  for (auto& f : extra) out.push_back(std::move(f));
  return prometheus::TextSerializer().Serialize(out);
}

}  // namespace tollgate::metrics

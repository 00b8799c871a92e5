// The typed cells and the family tables: indexing, label decoding, the priority families and
// the catalogue's names.
#include "tollgate/metrics/families.hpp"

#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>

#include <set>
#include <string>

namespace tollgate::metrics {
namespace {

using ratelimit::Measure;
using ratelimit::Period;
using ratelimit::Scope;

TEST(CellArrayTest, TypedIndicesDecodeToTheirLabels) {
  CellArray<Counter, Label<"scope", Scope>, Label<"period", Period>, Label<"unit", Measure>> a;
  a.at(Scope::kTenant, Period::kMonth, Measure::kNanoUsd).add(5);
  std::size_t hits = 0;
  for (std::size_t i = 0; i < a.kSize; ++i) {
    if (a.flat(i).value() == 0) continue;
    ++hits;
    auto names = a.value_names(i);
    EXPECT_EQ(names[0], "tenant");
    EXPECT_EQ(names[1], "month");
    EXPECT_EQ(names[2], "usd");
    EXPECT_EQ(a.flat(i).value(), 5u);
  }
  EXPECT_EQ(hits, 1u);
  EXPECT_EQ(a.kSize, 3u * 2u * 2u);
  EXPECT_EQ(a.kNames[2], "unit");
}

TEST(PriorityFamiliesTest, ClassesThatWaitExportTheirQueues) {
  SeriesRegistry reg;
  WorkerStats w0, w1;
  reg.add_worker(&w0);
  reg.add_worker(&w1);
  auto none = reg.intern("gpt-4o", "none");
  w0.route(none).class_requests[ClassRank{0}].add(2);
  w1.route(none).class_requests[ClassRank{0}].add(1);
  w1.route(none).dispatched[ClassRank{0}].add();
  w0.route(none).queue_wait[ClassRank{0}].observe_micros(30'000);  // the 0.05 bucket
  w1.route(none).shed.at(ClassRank{0}, ShedReason::kDeadline).add(4);
  w1.route(none).shed.at(ClassRank{1}, ShedReason::kQueueFull).add();  // a class that never waits

  std::vector<PriorityView> views{{"gpt-4o", none, {{"high", true, 7}, {"batch", false, 0}}}};
  std::vector<prometheus::MetricFamily> out;
  append_priority_families(reg, views, out);
  auto text = prometheus::TextSerializer().Serialize(out);
  const std::string expected =
      R"(# HELP tollgate_priority_requests_total Requests routed, by deployment and priority class.
# TYPE tollgate_priority_requests_total counter
tollgate_priority_requests_total{deployment="gpt-4o",class="high"} 3
# HELP tollgate_queue_depth Requests waiting for capacity now, by deployment and priority class.
# TYPE tollgate_queue_depth gauge
tollgate_queue_depth{deployment="gpt-4o",class="high"} 7
# HELP tollgate_queue_dispatched_total Requests that waited for capacity and were then sent to a backend.
# TYPE tollgate_queue_dispatched_total counter
tollgate_queue_dispatched_total{deployment="gpt-4o",class="high"} 1
# HELP tollgate_queue_wait_seconds Time requests waited for capacity (dispatched, timed out or abandoned).
# TYPE tollgate_queue_wait_seconds histogram
tollgate_queue_wait_seconds_count{deployment="gpt-4o",class="high"} 1
tollgate_queue_wait_seconds_sum{deployment="gpt-4o",class="high"} 0.03
tollgate_queue_wait_seconds_bucket{deployment="gpt-4o",class="high",le="0.0005"} 0
tollgate_queue_wait_seconds_bucket{deployment="gpt-4o",class="high",le="0.001"} 0
tollgate_queue_wait_seconds_bucket{deployment="gpt-4o",class="high",le="0.0025"} 0
tollgate_queue_wait_seconds_bucket{deployment="gpt-4o",class="high",le="0.005"} 0
tollgate_queue_wait_seconds_bucket{deployment="gpt-4o",class="high",le="0.01"} 0
tollgate_queue_wait_seconds_bucket{deployment="gpt-4o",class="high",le="0.025"} 0
tollgate_queue_wait_seconds_bucket{deployment="gpt-4o",class="high",le="0.05"} 1
tollgate_queue_wait_seconds_bucket{deployment="gpt-4o",class="high",le="0.1"} 1
tollgate_queue_wait_seconds_bucket{deployment="gpt-4o",class="high",le="0.25"} 1
tollgate_queue_wait_seconds_bucket{deployment="gpt-4o",class="high",le="0.5"} 1
tollgate_queue_wait_seconds_bucket{deployment="gpt-4o",class="high",le="1"} 1
tollgate_queue_wait_seconds_bucket{deployment="gpt-4o",class="high",le="2.5"} 1
tollgate_queue_wait_seconds_bucket{deployment="gpt-4o",class="high",le="5"} 1
tollgate_queue_wait_seconds_bucket{deployment="gpt-4o",class="high",le="10"} 1
tollgate_queue_wait_seconds_bucket{deployment="gpt-4o",class="high",le="30"} 1
tollgate_queue_wait_seconds_bucket{deployment="gpt-4o",class="high",le="60"} 1
tollgate_queue_wait_seconds_bucket{deployment="gpt-4o",class="high",le="120"} 1
tollgate_queue_wait_seconds_bucket{deployment="gpt-4o",class="high",le="+Inf"} 1
# HELP tollgate_queue_shed_total Requests that could have waited for capacity but were answered without it: queue_full, deadline, unreachable (no backend recovers in time), client_gone.
# TYPE tollgate_queue_shed_total counter
tollgate_queue_shed_total{deployment="gpt-4o",class="high",reason="queue_full"} 0
tollgate_queue_shed_total{deployment="gpt-4o",class="high",reason="deadline"} 4
tollgate_queue_shed_total{deployment="gpt-4o",class="high",reason="unreachable"} 0
tollgate_queue_shed_total{deployment="gpt-4o",class="high",reason="client_gone"} 0
)";
  EXPECT_EQ(text, expected);
}

TEST(FamilyBuilderTest, LabelsFollowTheSpecOrder) {
  FamilyBuilder<2> b(families::kHealthChecks);
  b.add({"east", "pass"}, 3);
  auto f = b.take();
  ASSERT_EQ(f.metric.size(), 1u);
  EXPECT_EQ(f.type, prometheus::MetricType::Counter);
  EXPECT_EQ(f.metric[0].label[0].name, "backend");
  EXPECT_EQ(f.metric[0].label[0].value, "east");
  EXPECT_EQ(f.metric[0].label[1].name, "result");
  EXPECT_EQ(f.metric[0].counter.value, 3);
}

TEST(FamilyCatalogueTest, NamesAreUniqueAndPrometheusShaped) {
  std::set<std::string_view> names;
  std::size_t count = 0;
  auto check = [&](std::string_view name) {
    ++count;
    EXPECT_TRUE(names.insert(name).second) << name;
    EXPECT_TRUE(name.starts_with("tollgate_")) << name;
  };
  auto visit = [&](const auto& table) {
    std::apply(
        [&](const auto&... e) {
          auto one = [&](const auto& x) {
            if constexpr (requires { x.spec; }) {
              check(x.spec.name);
            } else {
              check(x.name);
            }
          };
          (one(e), ...);
        },
        table);
  };
  visit(families::kRoute);
  visit(families::kWorker);
  visit(families::kClient);
  namespace f = families;
  for (auto n : {f::kConfigReloads.name,
                 f::kConfigLastReload.name,
                 f::kBuildInfo.name,
                 f::kBackendState.name,
                 f::kBackendInFlight.name,
                 f::kBackendRemainingTokens.name,
                 f::kBackendRemainingRequests.name,
                 f::kBackendUtilization.name,
                 f::kBackendBreakerOpens.name,
                 f::kBackendThrottled.name,
                 f::kAffinityEntries.name,
                 f::kPriorityRequests.name,
                 f::kQueueDepth.name,
                 f::kQueueDispatched.name,
                 f::kQueueWait.name,
                 f::kQueueShed.name,
                 f::kHealthChecks.name,
                 f::kRateLimitAvailable.name,
                 f::kRateLimitPerMinute.name,
                 f::kBudgetUsed.name,
                 f::kBudgetLimit.name,
                 f::kBudgetWarning.name,
                 f::kTokenRefreshFailures.name,
                 f::kJwksFetchFailures.name,
                 f::kClientKeys.name,
                 f::kLedgerQueueDepth.name,
                 f::kLedgerWritten.name,
                 f::kLedgerWriteErrors.name,
                 f::kLedgerDropped.name,
                 f::kLedgerWritable.name}) {
    check(n);
  }
  EXPECT_EQ(count, 56u);
}

}  // namespace
}  // namespace tollgate::metrics

// The exposition of the per-worker cells: names, HELP/TYPE lines, labels and values for known
// counts spread over two workers. The expected text is the exposition as it was before the
// families were declared in tables; it must not change.
#include <gtest/gtest.h>

#include <string>

#include "tollgate/metrics/stats.hpp"

namespace tollgate::metrics {
namespace {

struct Rig {
  SeriesRegistry reg;
  WorkerStats w0, w1;
  ControlStats control;
  std::uint32_t a = 0, b = 0, none = 0, idle = 0, app = 0, quiet = 0;

  Rig() {
    reg.add_worker(&w0);
    reg.add_worker(&w1);
    a = reg.intern("gpt-4o", "a");
    b = reg.intern("gpt-4o", "b");
    reg.set_tier(b, 1);
    none = reg.intern("gpt-4o", "none");
    idle = reg.intern("mini", "x");  // never used: exports nothing but its histograms' absence
    app = reg.intern_client("app", "team");
    quiet = reg.intern_client("quiet", "none");
  }
};

void record(Rig& r) {
  using ratelimit::Measure;
  using ratelimit::Period;
  using ratelimit::Scope;
  using ratelimit::Unit;
  r.w0.route(r.a).requests[StatusClass::k2xx].add(3);
  r.w1.route(r.a).requests[StatusClass::k2xx].add(2);
  r.w1.route(r.a).requests[StatusClass::k5xx].add();
  r.w0.route(r.a).duration.observe_micros(700);        // 0.0007 s: the 0.001 bucket
  r.w1.route(r.a).duration.observe_micros(2'000'000);  // 2 s: the 2.5 bucket
  r.w0.route(r.a).ttfb.observe_micros(300);
  r.w0.route(r.a).tokens[TokenType::kPrompt].add(10);
  r.w1.route(r.a).tokens[TokenType::kCompletion].add(5);
  r.w1.route(r.a).cost_nano_usd.add(1'500'000);
  r.w0.route(r.a).retries[RetryReason::kThrottled].add(2);
  r.w0.route(r.b).upstream_errors[UpstreamError::kConnectTimeout].add();
  r.w0.route(r.b).spilled_from[TierRank{0}].add(4);
  r.w1.route(r.b).usage_missing.add();
  r.w0.route(r.none).no_backend[NoBackendCode::k429].add();
  r.w1.route(r.none).no_backend[NoBackendCode::k503].add(2);
  r.w1.route(r.none).budget_exhausted.add();
  r.w0.route(r.idle).retries[RetryReason::kTimeout].add();

  auto& c0 = r.w0.client(r.app);
  auto& c1 = r.w1.client(r.app);
  c0.requests[StatusClass::k2xx].add(4);
  c1.requests[StatusClass::k4xx].add();
  c0.tokens[TokenType::kPrompt].add(7);
  c1.tokens[TokenType::kReasoning].add(2);
  c0.rate_limited.at(Scope::kTenant, Unit::kTokens).add();
  c1.rate_limited.at(Scope::kDeployment, Unit::kRequests).add(3);
  c0.budget_refused.at(Scope::kClient, Period::kMonth, Measure::kNanoUsd).add();
  c1.budget_refused.at(Scope::kTenant, Period::kDay, Measure::kTokens).add(2);
  c0.usage_estimated.add();
  c1.charged_tokens.add(40);
  c0.cost_nano_usd.add(250'000'000);

  r.w0.in_flight.add(2);
  r.w1.in_flight.add(-1);
  r.w0.open_connections.add(3);
  r.w1.connections_total.add(9);
  r.w0.upstream_idle.add(1);
  r.w1.upstream_connects.add(6);
  r.w0.accept_errors[AcceptError::kEmfile].add(2);
  r.w1.accept_errors[AcceptError::kEmfile].add(1);
  r.w1.accept_errors[AcceptError::kEnomem].add(1);
  r.w0.connections_refused.add(4);
  r.w0.reservations.add(1);
  r.control.reloads_ok.add(2);
  r.control.reloads_failed.add();
  r.control.last_reload_ok_time.store(1700000000.5);
}

constexpr const char* kExpected =
    R"(# HELP tollgate_requests_total Requests handled, by deployment, backend and status class (code="none": no response status was sent).
# TYPE tollgate_requests_total counter
tollgate_requests_total{deployment="gpt-4o",backend="a",code="2xx"} 5
tollgate_requests_total{deployment="gpt-4o",backend="a",code="5xx"} 1
# HELP tollgate_request_duration_seconds Time from the request's arrival to the end of its response.
# TYPE tollgate_request_duration_seconds histogram
tollgate_request_duration_seconds_count{deployment="gpt-4o",backend="a"} 2
tollgate_request_duration_seconds_sum{deployment="gpt-4o",backend="a"} 2.0007
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="a",le="0.0005"} 0
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="a",le="0.001"} 1
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="a",le="0.0025"} 1
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="a",le="0.005"} 1
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="a",le="0.01"} 1
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="a",le="0.025"} 1
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="a",le="0.05"} 1
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="a",le="0.1"} 1
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="a",le="0.25"} 1
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="a",le="0.5"} 1
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="a",le="1"} 1
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="a",le="2.5"} 2
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="a",le="5"} 2
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="a",le="10"} 2
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="a",le="30"} 2
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="a",le="60"} 2
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="a",le="120"} 2
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="a",le="+Inf"} 2
tollgate_request_duration_seconds_count{deployment="gpt-4o",backend="b"} 0
tollgate_request_duration_seconds_sum{deployment="gpt-4o",backend="b"} 0
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="b",le="0.0005"} 0
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="b",le="0.001"} 0
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="b",le="0.0025"} 0
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="b",le="0.005"} 0
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="b",le="0.01"} 0
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="b",le="0.025"} 0
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="b",le="0.05"} 0
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="b",le="0.1"} 0
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="b",le="0.25"} 0
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="b",le="0.5"} 0
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="b",le="1"} 0
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="b",le="2.5"} 0
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="b",le="5"} 0
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="b",le="10"} 0
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="b",le="30"} 0
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="b",le="60"} 0
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="b",le="120"} 0
tollgate_request_duration_seconds_bucket{deployment="gpt-4o",backend="b",le="+Inf"} 0
# HELP tollgate_time_to_first_byte_seconds Time from the request's arrival to the first response byte from the backend.
# TYPE tollgate_time_to_first_byte_seconds histogram
tollgate_time_to_first_byte_seconds_count{deployment="gpt-4o",backend="a"} 1
tollgate_time_to_first_byte_seconds_sum{deployment="gpt-4o",backend="a"} 0.0003
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="a",le="0.0005"} 1
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="a",le="0.001"} 1
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="a",le="0.0025"} 1
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="a",le="0.005"} 1
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="a",le="0.01"} 1
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="a",le="0.025"} 1
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="a",le="0.05"} 1
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="a",le="0.1"} 1
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="a",le="0.25"} 1
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="a",le="0.5"} 1
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="a",le="1"} 1
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="a",le="2.5"} 1
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="a",le="5"} 1
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="a",le="10"} 1
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="a",le="30"} 1
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="a",le="60"} 1
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="a",le="120"} 1
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="a",le="+Inf"} 1
tollgate_time_to_first_byte_seconds_count{deployment="gpt-4o",backend="b"} 0
tollgate_time_to_first_byte_seconds_sum{deployment="gpt-4o",backend="b"} 0
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="b",le="0.0005"} 0
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="b",le="0.001"} 0
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="b",le="0.0025"} 0
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="b",le="0.005"} 0
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="b",le="0.01"} 0
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="b",le="0.025"} 0
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="b",le="0.05"} 0
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="b",le="0.1"} 0
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="b",le="0.25"} 0
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="b",le="0.5"} 0
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="b",le="1"} 0
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="b",le="2.5"} 0
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="b",le="5"} 0
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="b",le="10"} 0
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="b",le="30"} 0
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="b",le="60"} 0
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="b",le="120"} 0
tollgate_time_to_first_byte_seconds_bucket{deployment="gpt-4o",backend="b",le="+Inf"} 0
# HELP tollgate_tokens_total Tokens reported by backends, by type.
# TYPE tollgate_tokens_total counter
tollgate_tokens_total{deployment="gpt-4o",backend="a",type="prompt"} 10
tollgate_tokens_total{deployment="gpt-4o",backend="a",type="completion"} 5
tollgate_tokens_total{deployment="gpt-4o",backend="a",type="cached"} 0
tollgate_tokens_total{deployment="gpt-4o",backend="a",type="reasoning"} 0
tollgate_tokens_total{deployment="gpt-4o",backend="b",type="prompt"} 0
tollgate_tokens_total{deployment="gpt-4o",backend="b",type="completion"} 0
tollgate_tokens_total{deployment="gpt-4o",backend="b",type="cached"} 0
tollgate_tokens_total{deployment="gpt-4o",backend="b",type="reasoning"} 0
# HELP tollgate_upstream_errors_total Upstream failures by reason.
# TYPE tollgate_upstream_errors_total counter
tollgate_upstream_errors_total{deployment="gpt-4o",backend="b",reason="connect_timeout"} 1
# HELP tollgate_usage_missing_total Successful inference responses that carried no usage.
# TYPE tollgate_usage_missing_total counter
tollgate_usage_missing_total{deployment="gpt-4o",backend="a"} 0
tollgate_usage_missing_total{deployment="gpt-4o",backend="b"} 1
# HELP tollgate_retries_total Attempts that failed on a backend and were retried on another, by the failed backend and the reason.
# TYPE tollgate_retries_total counter
tollgate_retries_total{deployment="gpt-4o",backend="a",reason="throttled"} 2
tollgate_retries_total{deployment="mini",backend="x",reason="timeout"} 1
# HELP tollgate_spillovers_total Requests served by a lower-priority tier because the tiers before it could not take them (tiers are numbered from 1).
# TYPE tollgate_spillovers_total counter
tollgate_spillovers_total{deployment="gpt-4o",from_tier="1",to_tier="2"} 4
# HELP tollgate_no_backend_available_total Requests answered by the gateway because no backend could take them (429: capacity returns soon; 503: it does not).
# TYPE tollgate_no_backend_available_total counter
tollgate_no_backend_available_total{deployment="gpt-4o",code="429"} 1
tollgate_no_backend_available_total{deployment="gpt-4o",code="503"} 2
# HELP tollgate_retry_budget_exhausted_total Retries not made because the deployment's retry budget was spent.
# TYPE tollgate_retry_budget_exhausted_total counter
tollgate_retry_budget_exhausted_total{deployment="gpt-4o"} 1
# HELP tollgate_cost_usd_total What requests cost by the deployment's price table, in USD.
# TYPE tollgate_cost_usd_total counter
tollgate_cost_usd_total{deployment="gpt-4o",backend="a"} 0.0015
# HELP tollgate_in_flight_requests Requests being handled now.
# TYPE tollgate_in_flight_requests gauge
tollgate_in_flight_requests 1
# HELP tollgate_open_connections Open client connections.
# TYPE tollgate_open_connections gauge
tollgate_open_connections 3
# HELP tollgate_reservations_outstanding Admission reservations (tokens held from limits and budgets) not yet settled.
# TYPE tollgate_reservations_outstanding gauge
tollgate_reservations_outstanding 1
# HELP tollgate_connections_total Client connections accepted.
# TYPE tollgate_connections_total counter
tollgate_connections_total 9
# HELP tollgate_upstream_idle_connections Idle pooled connections to backends.
# TYPE tollgate_upstream_idle_connections gauge
tollgate_upstream_idle_connections 1
# HELP tollgate_upstream_connections_total Connections opened to backends.
# TYPE tollgate_upstream_connections_total counter
tollgate_upstream_connections_total 6
# HELP tollgate_accept_errors_total Failed accepts of client connections, by reason: emfile (the process is out of file descriptors), enfile (the system is), enobufs, enomem, other.
# TYPE tollgate_accept_errors_total counter
tollgate_accept_errors_total{reason="emfile"} 3
tollgate_accept_errors_total{reason="enfile"} 0
tollgate_accept_errors_total{reason="enobufs"} 0
tollgate_accept_errors_total{reason="enomem"} 1
tollgate_accept_errors_total{reason="other"} 0
# HELP tollgate_connections_refused_total Client connections refused (429, then closed) because their source address had server.limits.max_connections_per_ip open already.
# TYPE tollgate_connections_refused_total counter
tollgate_connections_refused_total 4
# HELP tollgate_config_reloads_total Configuration reloads by result.
# TYPE tollgate_config_reloads_total counter
tollgate_config_reloads_total{result="success"} 2
tollgate_config_reloads_total{result="failure"} 1
# HELP tollgate_config_last_reload_success_timestamp_seconds Unix time of the last successful configuration load.
# TYPE tollgate_config_last_reload_success_timestamp_seconds gauge
tollgate_config_last_reload_success_timestamp_seconds 1700000000.5
# HELP tollgate_build_info Build information.
# TYPE tollgate_build_info gauge
tollgate_build_info{version=")" TOLLGATE_VERSION R"("} 1
# HELP tollgate_client_requests_total Requests finished, by client, tenant and status class.
# TYPE tollgate_client_requests_total counter
tollgate_client_requests_total{client="app",tenant="team",code="2xx"} 4
tollgate_client_requests_total{client="app",tenant="team",code="4xx"} 1
# HELP tollgate_client_tokens_total Tokens reported by backends, by client.
# TYPE tollgate_client_tokens_total counter
tollgate_client_tokens_total{client="app",tenant="team",type="prompt"} 7
tollgate_client_tokens_total{client="app",tenant="team",type="reasoning"} 2
# HELP tollgate_rate_limited_total Requests refused with 429 by an admission limit, by the limit's scope (client, tenant, deployment) and unit (tokens, requests).
# TYPE tollgate_rate_limited_total counter
tollgate_rate_limited_total{client="app",tenant="team",scope="tenant",limit="tokens"} 1
tollgate_rate_limited_total{client="app",tenant="team",scope="deployment",limit="requests"} 3
# HELP tollgate_usage_estimated_total Requests whose usage the gateway counted itself (a stream that ended without a usage event).
# TYPE tollgate_usage_estimated_total counter
tollgate_usage_estimated_total{client="app",tenant="team"} 1
# HELP tollgate_charged_tokens_total Tokens charged to the admission buckets at settlement, by client.
# TYPE tollgate_charged_tokens_total counter
tollgate_charged_tokens_total{client="app",tenant="team"} 40
# HELP tollgate_budget_refused_total Requests refused with 429 by a calendar budget, by the budget's scope (client, tenant), period (day, month) and unit (tokens, usd).
# TYPE tollgate_budget_refused_total counter
tollgate_budget_refused_total{client="app",tenant="team",scope="client",period="month",unit="usd"} 1
tollgate_budget_refused_total{client="app",tenant="team",scope="tenant",period="day",unit="tokens"} 2
# HELP tollgate_client_cost_usd_total What a client's requests cost by the deployments' price tables, in USD.
# TYPE tollgate_client_cost_usd_total counter
tollgate_client_cost_usd_total{client="app",tenant="team"} 0.25
)";

TEST(RenderMetricsTest, ExpositionOfKnownCounts) {
  Rig r;
  record(r);
  EXPECT_EQ(render_metrics(r.reg, r.control), kExpected);
}

}  // namespace
}  // namespace tollgate::metrics

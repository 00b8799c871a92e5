// The answers of the routing step when capacity is missing: no backend, or shed from a queue.

#include "server/pipeline/stages.hpp"

namespace tollgate::pipeline {

namespace {
// A longer wait than this makes the SDKs ignore retry-after (node, old python) or give up (new
// python): the gateway answers 503 + x-should-retry: false instead of 429.
constexpr core::TimeMs kMaxClientWaitMs = 60'000;
}  // namespace

Reply no_backend(Exchange& x, core::TimeMs now) {
  auto& ctx = x.ctx;
  auto earliest = routing::earliest_recovery(x.route->route, x.snap.slots, now, x.only, x.allowed.span());
  ctx.series = x.route->series_none;
  ctx.backend = {};
  ctx.tier = 0;
  auto& cells = x.stats.route(ctx.series);
  const auto& name = ctx.deployment->name;
  if (earliest && *earliest - now <= kMaxClientWaitMs) {
    cells.no_backend[metrics::NoBackendCode::k429].add();
    return too_many_requests("no_backend_available",
                             "All backends of deployment '" + name + "' are at capacity.",
                             *earliest - now, pipeline::Outcome::kNoBackend);
  }
  cells.no_backend[metrics::NoBackendCode::k503].add();
  std::optional<std::int64_t> wait;
  if (earliest) wait = *earliest - now;
  return unavailable("no_backend_available",
                     "No backend of deployment '" + name +
                         "' can take requests now, and none is expected to recover within a minute.",
                     wait, pipeline::Outcome::kNoBackend);
}

Reply shed(Exchange& x, metrics::ShedReason reason, core::TimeMs now) {
  const auto& plan = x.plan;
  const auto& name = x.ctx.deployment->name;
  auto wait = x.snap.scheduler->drain_estimate(name, plan.cls, now)
                  .value_or(std::max<core::TimeMs>(1000, plan.klass->max_queue_wait.count() / 2));
  wait = std::max<core::TimeMs>(wait, 100);
  x.ctx.backend = {};
  bool full = reason == metrics::ShedReason::kQueueFull;
  std::string_view why_code = full ? "queue_full" : "queue_timeout";
  std::string why = full ? "Too many requests of priority '" + plan.klass->name +
                               "' are waiting for deployment '" + name + "'."
                         : "No capacity of deployment '" + name +
                               "' became available while this request of priority '" +
                               plan.klass->name + "' could wait.";
  if (wait > kMaxClientWaitMs) {
    return unavailable(why_code, why + " The backlog will not clear within a minute.", wait,
                       pipeline::Outcome::kShed);
  }
  return too_many_requests(why_code, why, wait, pipeline::Outcome::kShed);
}

}  // namespace tollgate::pipeline

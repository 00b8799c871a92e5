// The prioritize stage: the caller's priority class, which a request may lower (never raise)
// with the priority header; the class decides the tiers it may use and how long it may wait.

#include <charconv>

#include "server/pipeline/stages.hpp"

namespace tollgate::pipeline {

namespace {

// The tiers reserved for other classes are out, on failover too; a tier the class may use as
// spare capacity is in while its backends' utilization is below the threshold.
routing::BackendMask class_mask(const Exchange& x, std::size_t cls) {
  const auto& drt = *x.route;
  routing::BackendMask mask(drt.class_allowed[cls]);
  for (const auto& sp : drt.class_spare[cls]) {
    const auto& st = *x.snap.backends[sp.backend].state;
    std::optional<double> util;
    if (auto u = st.utilization()) {
      util = *u / 100.0;
    } else if (auto cap = x.snap.slots[sp.backend].max_in_flight; cap > 0) {
      util = static_cast<double>(st.in_flight()) / cap;
    }
    if (util && *util < sp.max_utilization) mask.allow(sp.backend);
  }
  return mask;
}

// The wait allowed: the class's, shortened by the client's own timeout header (seconds).
std::int64_t allowed_wait_ms(const Exchange& x, const config::PriorityClassConfig& klass) {
  auto wait = klass.max_queue_wait.count();
  for (const auto& name : x.config().priority.timeout_headers) {
    auto v = x.req.headers[name];
    if (v.empty()) continue;
    double secs = 0;
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), secs);
    if (ec == std::errc{} && p == v.data() + v.size() && secs > 0 &&
        secs * 1000 < static_cast<double>(wait)) {
      wait = static_cast<std::int64_t>(secs * 1000);  // (inf and 1e300 fail the comparison)
    }
  }
  return wait;
}

Reply unknown_class(const config::PriorityConfig& pcfg) {
  std::string names;
  for (const auto& k : pcfg.classes) names += (names.empty() ? "" : ", ") + k.name;
  return Reply::error("bad_priority", core::bad_request("the " + pcfg.header +
                                                        " header names no priority class (" +
                                                        names + ")"));
}

}  // namespace

StageResult prioritize(Exchange& x) {
  const auto& pcfg = x.config().priority;
  auto& plan = x.plan;
  plan.cls = x.caller != nullptr && x.caller->priority ? *x.caller->priority : pcfg.default_class;
  if (!pcfg.header.empty()) {
    if (auto h = x.req.headers[pcfg.header]; !h.empty()) {
      auto asked = pcfg.find(h);
      if (!asked) return unknown_class(pcfg);
      plan.cls = std::max(plan.cls, *asked);  // lower only
    }
  }
  plan.klass = &pcfg.classes[plan.cls];
  if (x.caller != nullptr) plan.weight = x.caller->weight;
  x.ctx.priority = plan.klass->name;
  if (!x.route->class_allowed.empty()) x.allowed.intersect(class_mask(x, plan.cls));
  plan.wait = plan.klass->max_queue_wait.count() > 0;
  if (plan.wait) plan.deadline = x.clock.steady_ms() + allowed_wait_ms(x, *plan.klass);
  return std::nullopt;
}

}  // namespace tollgate::pipeline

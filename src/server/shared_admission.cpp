#include "server/shared_admission.hpp"

#include "server/worker.hpp"

namespace tollgate::server {

namespace {

// At most one log line a minute per worker while the store is away.
void note_unavailable(Worker& w, const std::string& problem) {
  constexpr core::TimeMs kLogEvery = 60'000;
  auto now = w.clock().steady_ms();
  auto& last = w.shared_logged_ms();
  if (last != 0 && now - last < kLogEvery) return;
  last = now;
  metrics::log_warn("cluster: the shared store is unavailable; admission follows cluster.on_failure",
                    core::JsonFields{}.add("problem", problem).add("worker", static_cast<std::int64_t>(w.index())));
}

}  // namespace

proxy::net::awaitable<pipeline::StageResult> admit_shared(Worker& w, pipeline::Exchange& x) {
  auto* limiter = w.shared_limiter();
  const auto& demand = *x.ctx.shared_demand;
  if (limiter != nullptr) {
    if (auto leased = limiter->take(demand, x.clock.unix_ms())) {
      co_return pipeline::admitted_shared(x, *leased, w.replicas_seen());
    }
  }
  cluster::ReserveOutcome outcome;
  if (limiter == nullptr || !limiter->redis()->up()) {
    outcome.problem = limiter == nullptr ? "no connection could be set up" : "not connected";
  } else {
    outcome = co_await limiter->reserve(demand, x.clock.unix_ms());
  }
  if (outcome.kind == cluster::ReserveOutcome::Kind::kUnavailable) note_unavailable(w, outcome.problem);
  co_return pipeline::admitted_shared(x, outcome, w.replicas_seen());
}

}  // namespace tollgate::server

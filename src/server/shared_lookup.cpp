#include "server/shared_lookup.hpp"

#include <boost/asio/steady_timer.hpp>

#include "server/worker.hpp"

namespace tollgate::server {

namespace {

pipeline::Reply lookup_unavailable() {
  pipeline::HeaderList headers;
  headers.emplace_back("x-should-retry", "true");
  headers.emplace_back("retry-after", "1");
  core::HttpError e{503, "503",
                    "The gateway cannot reach the store its replicas share stored objects through; "
                    "retry shortly.",
                    "service_unavailable", {}};
  return pipeline::Reply::error("objects_unavailable", e, std::move(headers));
}

// Puts the records the store holds for `ids` into the local table and leaves in `ids` those it
// lacks. False when the store did not answer.
proxy::net::awaitable<bool> absorb(cluster::SharedObjects& store, pipeline::Exchange& x,
                                   std::vector<std::string>& ids) {
  auto got = co_await store.fetch(ids);
  if (got.failure) co_return false;
  auto now = x.clock.steady_ms();
  auto ttl = x.config().routing.affinity_ttl.count();
  std::vector<std::string> missing;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (!got.records[i]) {
      missing.push_back(std::move(ids[i]));
      continue;
    }
    auto& r = *got.records[i];
    x.snap.affinity->restore({std::move(ids[i]), std::move(r.owner), r.billing, ttl}, now);
  }
  ids = std::move(missing);
  co_return true;
}

}  // namespace

proxy::net::awaitable<pipeline::StageResult> locate_shared(Worker& w, pipeline::Exchange& x) {
  auto* store = w.shared_objects();
  auto ids = std::move(x.unresolved);
  x.unresolved.clear();
  if (store == nullptr || !store->up() || !co_await absorb(*store, x, ids)) {
    co_return lookup_unavailable();
  }
  if (!ids.empty()) {
    proxy::net::steady_timer pause(w.io().get_executor(), kRecheckAfter);
    co_await pause.async_wait(proxy::net::as_tuple(proxy::net::use_awaitable));
    if (!co_await absorb(*store, x, ids)) co_return lookup_unavailable();
  }
  x.looked_up = true;
  co_return pipeline::locate_objects(x);
}

proxy::net::awaitable<bool> claim_lost(Worker& w, const pipeline::Exchange& x) {
  auto* store = w.shared_objects();
  if (store == nullptr) co_return false;
  co_return co_await store->claim(x.claimed) == cluster::BillingClaim::kLost;
}

}  // namespace tollgate::server

#pragma once
// The admit_shared await stage: with a cluster, the admit stage leaves the request's demand in
// ctx.shared_demand and this stage reserves it in the shared store (one round trip, bounded by
// cluster.redis.timeout), then hands the outcome to pipeline::admitted_shared. The only request
// stage that waits for I/O, so it runs after the synchronous stages. Thread: the worker's.

#include "proxy/net.hpp"
#include "server/pipeline/stages.hpp"

namespace tollgate::server {

class Worker;

/// Whether the request has a demand for the shared store.
inline bool awaits_shared(const pipeline::Exchange& x) { return x.ctx.shared_demand.has_value(); }

proxy::net::awaitable<pipeline::StageResult> admit_shared(Worker& w, pipeline::Exchange& x);

}  // namespace tollgate::server

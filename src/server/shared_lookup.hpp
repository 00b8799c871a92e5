#pragma once
// The locate_shared await stage: with a cluster, the ids locate_objects did not find in this
// replica's affinity table (x.unresolved) are fetched from the cluster's store in one MGET, put
// into the local table, and locate_objects runs again on them. It runs between the locating and
// the routing request stages (pipeline::kLocatedStages). A miss is asked once more after
// kRecheckAfter: a response made through another replica may be read before that replica's
// write has reached the store. The store away: 503 with x-should-retry (see
// docs/design/cluster.md, "Stored objects"). Thread: the worker's.

#include <chrono>

#include "proxy/net.hpp"
#include "server/pipeline/stages.hpp"

namespace tollgate::server {

class Worker;

/// The wait before a miss is asked again (the creator's write is in flight; see the docs).
inline constexpr std::chrono::milliseconds kRecheckAfter{10};

/// Whether the request names objects only the cluster's store may know.
inline bool awaits_objects(const pipeline::Exchange& x) { return !x.unresolved.empty(); }

proxy::net::awaitable<pipeline::StageResult> locate_shared(Worker& w, pipeline::Exchange& x);

/// After note_answer claimed a pending object's charge in this replica's table (x.claimed):
/// whether another replica charged it first (the store settled it already), so this answer
/// must not. A store that does not answer, or holds no record, leaves the local claim standing.
proxy::net::awaitable<bool> claim_lost(Worker& w, const pipeline::Exchange& x);

}  // namespace tollgate::server

#pragma once
// The request pipeline's shared view of one request: what the session read (RequestView), the
// configuration it runs on, and what each stage decided. Plain C++ (no Beast, no Asio): stages
// are synchronous functions over an Exchange and are unit-tested alone. See
// docs/architecture.md ("The request pipeline") for the stage list, its order and who writes
// which member.
// Thread: the worker running the request. Lifetime: one request.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "server/pipeline/snapshot.hpp"
#include "tollgate/auth/authenticator.hpp"
#include "tollgate/core/clock.hpp"
#include "server/pipeline/request_context.hpp"
#include "tollgate/metrics/stats.hpp"
#include "tollgate/routing/affinity.hpp"
#include "tollgate/routing/balancer.hpp"

namespace tollgate::pipeline {

/// Header lookup by name (case-insensitive, "" when absent), over whatever the session parsed.
/// A non-owning callable reference: the lookup object outlives the Exchange.
class Headers {
 public:
  template <class Lookup>
  explicit Headers(const Lookup& lookup)
      : obj_(&lookup), get_([](const void* o, std::string_view n) -> std::string_view {
          return (*static_cast<const Lookup*>(o))(n);
        }) {}
  std::string_view operator[](std::string_view name) const { return get_(obj_, name); }

 private:
  const void* obj_;
  std::string_view (*get_)(const void*, std::string_view);
};

/// The request as the stages see it: views into the session's parsed request.
struct RequestView {
  std::string_view method;
  std::string_view target;
  Headers headers;
  std::string_view body;
};

/// What a request may do when no backend can take it now: wait for capacity (its priority
/// class's `max_queue_wait`, its own timeout) or not.
struct QueuePlan {
  std::size_t cls = 0;
  const config::PriorityClassConfig* klass = nullptr;
  bool wait = false;            // the class queues (max_queue_wait > 0)
  double weight = 1;            // the client's share within its class
  core::TimeMs deadline = 0;    // dispatched by then, or shed
};

/// What a list call asks for, in the merged list (OpenAI's cursor pagination): how many, which
/// order by created_at, and the id after which to start ("": from the start).
struct ListQuery {
  std::size_t limit = 20;
  bool ascending = false;
  std::string after;
};

/// A list call (GET on a collection of stored objects): answered with one list merged from
/// every backend of `backends` (fan_out_lists), not forwarded to one.
struct ListPlan {
  ListQuery query;
  std::string upstream_query;           // the client's query without limit, order and after
  std::vector<std::uint32_t> backends;  // the deployment's backends the caller may use
};

struct Exchange {
  // --- inputs, set by the session ---
  const pipeline::Snapshot& snap;
  const pipeline::AuthState& auth;
  RequestView req;
  pipeline::RequestContext& ctx;
  metrics::WorkerStats& stats;
  const core::Clock& clock;
  bool ledger = false;  // a usage ledger records every inference call
  bool shared = false;  // a cluster: limits, budgets (admit_shared) and object owners
                        // (locate_shared) are held in its store

  // --- decisions, each written by the one stage named ---
  auth::Identity identity;                       // authenticate
  const config::ClientConfig* caller = nullptr;  // authenticate (null: anonymous)
  const pipeline::DeploymentRuntime* route = nullptr;  // route
  routing::BackendMask allowed;                  // authorize (regions), prioritize (tiers)
  QueuePlan plan;                                // prioritize
  std::optional<std::uint32_t> only;             // route (the object's backend), pin
  std::optional<ListPlan> list;                  // fan_out_lists: a list call
  bool creates = false;                          // locate_objects: the call creates a stored object
  bool capture_ids = false;                      // locate_objects: read the ids its answer carries
  std::optional<routing::ObjectOwner> owner;     // locate_objects: of the object the call names
  std::string object;                            // locate_objects: that object's id
  std::vector<std::string> unresolved;  // locate_objects: ids to ask the cluster's store for
  bool looked_up = false;               // locate_shared: the store was asked (a miss is unknown)
  std::string claimed;  // note_answer: the pending object this answer's charge was claimed for
  std::int64_t need_tokens = 0;                  // admit: what the balancer looks for room for
  bool accounted = false;  // admit: usage is settled or recorded (limits, budgets, policy, ledger)

  const config::Config& config() const { return *snap.config; }
  bool inference() const;
};

}  // namespace tollgate::pipeline

#pragma once
// The request stages, in the order they run (kRequestStages), and the request filters that edit
// what goes upstream. Each stage reads the Exchange, records its decision there, and either lets
// the request go on (nullopt) or answers it (a Reply). None does I/O or blocks; waiting for
// capacity and forwarding are the session's coroutines after the stages.
// Who writes what: see exchange.hpp and docs/architecture.md.

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "server/pipeline/exchange.hpp"
#include "server/pipeline/reply.hpp"
#include "tollgate/core/objects.hpp"
#include "tollgate/routing/affinity.hpp"

namespace tollgate::pipeline {

using StageResult = std::optional<Reply>;

// --- Header stages: run as soon as the request header is read, before any body byte is read
// (or `100 Continue` sent). A refusal here closes the connection without reading the body.

/// Who is calling: key or JWT → identity, client, tenant, metrics series. 401 / 403.
StageResult authenticate(Exchange& x);
/// What is called, from the method and target: surface, operation, the deployment a path
/// names. 400 / 404 / 405.
StageResult classify_target(Exchange& x);
/// The deployment the path names exists, and the caller may use it and the operation. 403 / 404.
StageResult authorize_target(Exchange& x);

// --- Request stages: run once the body is read.

/// The body: stream flags, the model of the v1 surfaces, required parameters. 400.
StageResult classify(Exchange& x);
/// GET /v1/models: answered by the gateway with the deployments the caller may use.
StageResult list_models(Exchange& x);
/// Which deployment: a call naming a stored object goes where the object lives (route_to_owner);
/// other stateful calls without a model go to routing.affinity.deployment. 404.
StageResult route(Exchange& x);
/// The object's backend (x.only) and a deployment that uses it: the one the call names when
/// that deployment uses the object's backend or another backend on the same Azure resource
/// (objects live on the resource), else the deployment it was created through. 404.
StageResult route_to_owner(Exchange& x);
/// Under /openai/deployments/{d}/, /openai/v1/ and /v1/: an operation the gateway does not know
/// (not inference, models or a stateful API) only when the deployment lists it in
/// `passthrough`; such a call is billed from its answer. 404 OperationNotSupported.
StageResult check_operation(Exchange& x);
/// May the caller use the deployment, the operation, and which backends (regions). 403.
StageResult authorize(Exchange& x);
/// A list call (GET files, batches, vector_stores, assistants or fine_tuning/jobs under
/// /openai/, /openai/v1/ or /v1/) is not forwarded to one backend: the session asks every
/// backend of the deployment in the caller's regions and answers one list of the caller's own
/// objects (x.list; see server/object_lists.hpp). Reads limit, order and after. 400 for a bad
/// limit or order, and for `before` (not supported across backends).
StageResult fan_out_lists(Exchange& x);
/// The priority class (the header may lower it), its tiers and how long it may wait. 400.
StageResult prioritize(Exchange& x);
/// Stored objects: every object the call names must be known and usable by the caller (404 as
/// for an unknown id otherwise) and live on one backend (400); records its owner for route. A
/// call that creates an object or may reveal ones (a batch's output files) reads its answer.
/// With a cluster, ids this replica does not know go to x.unresolved: the locate_shared await
/// stage (server/shared_lookup.hpp) fetches them and runs this stage again.
StageResult locate_objects(Exchange& x);
/// 404 DeploymentNotFound, as Azure words it.
Reply unknown_deployment();
/// The answer to a call naming `id` that does not exist for this caller (unknown, another
/// caller's, or out of its reach): one body for all, so a caller learns nothing of others' objects.
Reply unknown_object(std::string_view id);
/// As soon as a 2xx answer to a stateful call shows its ids (before its last byte reaches the
/// client): remembers the object it created (a background response as pending billing) and the
/// objects the backend made for the named one (a batch's files).
void remember_answer(Exchange& x, const core::AnswerIds& ids, core::TimeMs now);
/// After a relayed answer to a stateful call: settles a background response whose create carried
/// its usage, charges the first read that carries a pending one's usage (ctx.charge; with a
/// cluster, x.claimed names it and the session confirms the claim fleet-wide before finish), and
/// forgets a deleted object. `ids`: what the answer carried.
void note_answer(Exchange& x, const core::AnswerIds& ids, core::TimeMs now);
/// The owner record of an object this request creates on `backend`: the caller (client and
/// tenant; empty for anonymous callers) and the deployment. The session remembers it in the
/// affinity table; locate_objects lets only its owner (or its tenant, with share_objects) use it.
routing::ObjectOwner object_owner(const Exchange& x, std::string_view backend);
/// Whether the caller may use an object `owner` made: its own, or one of its tenant's when the
/// tenant sets share_objects. Anonymous callers use the objects anonymous callers made.
bool may_use(const Exchange& x, const routing::ObjectOwner& owner);
/// The pin header (clients with may_pin): this backend or nothing. 400 / 403.
StageResult pin(Exchange& x);
/// Policy (n, best_of, max_tokens), the token estimate, budgets and rate limits, reserved all
/// or nothing and settled in finish(). 400 / 429.
StageResult admit(Exchange& x);

/// After the admit_shared await stage (server/shared_admission.hpp) reserved ctx.shared_demand
/// in the cluster's store: holds it, or answers the refusal (429, budget) — or, with the store
/// away, reserves this replica's share of each limit locally (on_failure: local: limit ÷
/// `replicas` seen) or answers 503 (deny).
StageResult admitted_shared(Exchange& x, const cluster::ReserveOutcome& outcome, std::size_t replicas);

struct Stage {
  std::string_view name;
  StageResult (*run)(Exchange&);
};

inline constexpr std::array kHeaderStages = {
    Stage{"authenticate", authenticate},
    Stage{"classify_target", classify_target},
    Stage{"authorize_target", authorize_target},
};

// The request stages run in two parts around the locate_shared await stage (a cluster's
// stored-object owners): kRequestStages[0, kLocatedStages) know what the call names, the rest
// route and admit it. run_request_stages runs both parts (nothing to await).
inline constexpr std::array kRequestStages = {
    Stage{"classify", classify},
    Stage{"list_models", list_models},
    Stage{"locate_objects", locate_objects},
    Stage{"route", route},
    Stage{"check_operation", check_operation},
    Stage{"authorize", authorize},
    Stage{"fan_out_lists", fan_out_lists},
    Stage{"prioritize", prioritize},
    Stage{"pin", pin},
    Stage{"admit", admit},
};

inline constexpr std::size_t kLocatedStages = [] {
  std::size_t i = 0;
  while (kRequestStages[i].name != "locate_objects") ++i;
  return i + 1;
}();

/// Run the stages in order; the first answer ends the request (its outcome and reason are
/// recorded in the context).
StageResult run_header_stages(Exchange& x);
StageResult run_request_stages(Exchange& x);
/// The request stages up to locate_objects, and the ones after it.
StageResult run_locating_stages(Exchange& x);
StageResult run_routing_stages(Exchange& x);

/// Request filters: edits of what is sent upstream, run after the stages when the request goes
/// on. `request_usage` asks a stream for its usage (stream_options.include_usage) when the
/// client did not, and has the relay strip it back out; `hide_pin_header` keeps the pin header
/// from the backends.
void request_usage(Exchange& x);
void hide_pin_header(Exchange& x);

struct RequestFilter {
  std::string_view name;
  void (*run)(Exchange&);
};
inline constexpr std::array kRequestFilters = {
    RequestFilter{"request_usage", request_usage},
    RequestFilter{"hide_pin_header", hide_pin_header},
};
void run_request_filters(Exchange& x);

}  // namespace tollgate::pipeline

namespace tollgate::pipeline {

/// No backend can take the request: 429 with the earliest recovery when it is within a minute
/// (the SDKs wait that long), else 503 + x-should-retry: false. Counts it on the deployment.
Reply no_backend(Exchange& x, core::TimeMs now);
/// The request could have waited but did not get capacity (queue full, deadline): 429 with a
/// wait estimated from the queue's drain rate (503 + x-should-retry: false beyond a minute).
Reply shed(Exchange& x, metrics::ShedReason reason, core::TimeMs now);

}  // namespace tollgate::pipeline

// --- Lists across backends: the plain part of a list call (fan_out_lists decides; the session's
// server/object_lists asks the backends page by page and answers merge_lists()). See
// docs/design/routing.md ("Lists across backends").
namespace tollgate::pipeline {

/// Pages asked of one backend for one list call, at most, and the objects asked per page.
inline constexpr unsigned kMaxListPages = 20;
inline constexpr std::size_t kListPageSize = 100;

/// One object of a backend's list page: its id, created_at (seconds) and JSON text.
struct ListItem {
  std::string id;
  std::int64_t created_at = 0;
  std::string json;
};

/// A backend's list page, as it answered.
struct ListPage {
  std::vector<ListItem> items;
  bool has_more = false;
};

/// The list page in `body` (`{"data":[...],"has_more":...}`); nullopt when it is not one (not
/// JSON, no data array, an item without a string id or an integer created_at).
std::optional<ListPage> parse_list_page(std::string_view body);

/// What has been read of one backend's list: the caller's objects on it, where its next page
/// starts, and whether it has one. Owner: the list call.
struct BackendList {
  std::vector<ListItem> kept;     // the caller's objects, in the backend's order
  std::string cursor;             // the last id of its last page (the next page's `after`)
  std::int64_t last_created = 0;  // created_at of that last object
  bool more = true;               // it has more (or was not asked yet)
  unsigned pages = 0;
};

/// Whose object an id is: true for the caller's own (see may_use).
using KeepObject = std::function<bool(std::string_view id)>;

/// Adds a backend's next `page` to `list`, keeping the objects `keep` accepts.
void absorb(BackendList& list, ListPage page, const KeepObject& keep);

/// Whether `lists[b]`'s next page can change the answer to `q`: the backend has more, it was
/// asked fewer than kMaxListPages pages, and fewer than limit + 1 of the caller's objects it
/// listed follow the cursor `q.after` (the cursor's place is known once some backend listed it).
bool wants_more(std::span<const BackendList> lists, std::size_t b, const ListQuery& q);

/// The query string (no '?') for the next page of `list`: the client's other parameters, then
/// limit, order and, after the first page, after.
std::string page_query(const ListPlan& plan, const BackendList& list);

/// The one list the client gets, in OpenAI's shape ({"object":"list","data":[...],
/// "first_id","last_id","has_more"}): the kept objects of every list, newest first by
/// created_at (ties: id; `q.ascending`: the reverse), those after `q.after` (none when no list
/// holds it), at most `q.limit`. has_more: more of the caller's objects follow; also true for a
/// non-empty page when a backend still had more as paging stopped (a bound: the next page may
/// then be empty).
std::string merge_lists(std::span<const BackendList> lists, const ListQuery& q);

}  // namespace tollgate::pipeline

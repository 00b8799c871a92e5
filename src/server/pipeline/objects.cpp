// Stages that fix the backend before the balancer: stored objects live on the backend that
// created them (locate_objects, route_to_owner), and a tester may pin one (pin). And what an
// answer to a stateful call teaches the affinity table (note_answer).

#include "server/pipeline/stages.hpp"
#include "tollgate/core/objects.hpp"
#include "tollgate/routing/affinity.hpp"

namespace tollgate::pipeline {

namespace {

Reply object_backend_gone(std::string_view id, std::string_view deployment) {
  std::string where = deployment.empty() ? std::string("any deployment")
                                         : "deployment '" + std::string(deployment) + "'";
  return Reply::error("object_backend_gone",
                      core::not_found("404", "The object '" + std::string(id) +
                                                 "' lives on a backend that " + where +
                                                 " does not use."));
}

// Objects live on an Azure resource, whichever of its deployments made them.
bool same_resource(const config::Endpoint& a, const config::Endpoint& b) {
  return a.host == b.host && a.port == b.port && a.base_path == b.base_path && a.tls == b.tls;
}

// The member of `d`'s route that can reach objects made on `backend`: the backend itself, else
// one on the same resource.
std::optional<std::uint32_t> reaching(const Exchange& x, const DeploymentRuntime& d,
                                      std::uint32_t backend) {
  if (d.route.contains(backend)) return backend;
  const auto& home = x.snap.backends[backend].config->endpoint;
  for (const auto& tier : d.route.tiers) {
    for (const auto& m : tier) {
      if (same_resource(x.snap.backends[m.backend].config->endpoint, home)) return m.backend;
    }
  }
  return std::nullopt;
}

void settle_route(Exchange& x, const config::DeploymentConfig& d, std::uint32_t backend) {
  const auto& cfg = x.config();
  x.ctx.deployment = &d;
  x.route = &x.snap.deployments[cfg.deployment_index(d)];
  x.ctx.series = x.route->series_none;
  x.only = backend;
}

// Whether a successful answer to this call deleted the object it names itself (not a child:
// DELETE vector_stores/{vs}/files/{f} detaches a file).
bool deletes_named_object(const Exchange& x) {
  if (x.req.method != "DELETE") return false;
  const auto& path = x.ctx.call.op_path;
  return path.find('/') == path.rfind('/');  // collection/{id}
}

}  // namespace

Reply unknown_object(std::string_view id) {
  return Reply::error("unknown_object",
                      core::not_found("404", "No object '" + std::string(id) +
                                                 "' is known to this gateway: it was not "
                                                 "created through it, or it expired from its "
                                                 "affinity table."));
}

bool may_use(const Exchange& x, const routing::ObjectOwner& owner) {
  auto me = object_owner(x, {});
  if (owner.client == me.client && owner.tenant == me.tenant) return true;
  if (me.tenant.empty() || owner.tenant != me.tenant) return false;
  return x.config().tenants[x.caller->tenant].share_objects;
}

routing::ObjectOwner object_owner(const Exchange& x, std::string_view backend) {
  routing::ObjectOwner o;
  o.backend = std::string(backend);
  if (x.ctx.deployment != nullptr) o.deployment = x.ctx.deployment->name;
  if (x.caller == nullptr) return o;  // anonymous
  o.client = x.caller->name;
  if (x.caller->tenant != config::ClientConfig::kNoTenant) {
    o.tenant = x.config().tenants[x.caller->tenant].name;
  }
  return o;
}

StageResult locate_objects(Exchange& x) {
  auto& call = x.ctx.call;
  if (!call.stateful) return std::nullopt;
  const core::BodyFields* fields = call.fields ? &*call.fields : nullptr;
  x.creates = core::creates_object(x.req.method, call.op_path, call.body, fields);
  x.capture_ids = x.creates || core::reveals_objects(call.op_path);
  auto now = x.clock.steady_ms();
  x.owner.reset();  // it runs again once locate_shared has fetched what it did not know
  x.object.clear();
  x.unresolved.clear();
  for (const auto& id : core::referenced_ids(call.op_path, call.body, fields)) {
    auto owner = x.snap.affinity->find(id, now);
    if (!owner && x.shared && !x.looked_up) {  // another replica may have made it
      x.unresolved.push_back(id);
      continue;
    }
    if (!owner || !may_use(x, *owner)) return unknown_object(id);
    if (!x.owner) {
      x.owner = std::move(owner);
      x.object = id;
    } else if (owner->backend != x.owner->backend) {
      return Reply::error("objects_apart",
                          core::bad_request("The objects '" + x.object + "' and '" + id +
                                            "' live on different backends and cannot be used "
                                            "together."));
    }
  }
  return std::nullopt;
}

StageResult route_to_owner(Exchange& x) {
  const auto& cfg = x.config();
  const auto& owner = *x.owner;
  auto b = x.snap.backend_index.find(owner.backend);
  const auto& named = x.ctx.call.deployment;
  if (!named.empty()) {  // a model in the body: that deployment, on the object's resource
    const auto* d = cfg.find_deployment(named);
    if (d == nullptr) return unknown_deployment();
    auto member = b == x.snap.backend_index.end()
                      ? std::nullopt
                      : reaching(x, x.snap.deployments[cfg.deployment_index(*d)], b->second);
    if (!member) return object_backend_gone(x.object, named);
    settle_route(x, *d, *member);
    return std::nullopt;
  }
  if (b == x.snap.backend_index.end()) return object_backend_gone(x.object, {});
  // The deployment it was created through, else any that still uses its backend.
  if (const auto* home = cfg.find_deployment(owner.deployment)) {
    if (x.snap.deployments[cfg.deployment_index(*home)].route.contains(b->second)) {
      settle_route(x, *home, b->second);
      return std::nullopt;
    }
  }
  for (std::size_t i = 0; i < cfg.deployments.size(); ++i) {
    if (x.snap.deployments[i].route.contains(b->second)) {
      settle_route(x, cfg.deployments[i], b->second);
      return std::nullopt;
    }
  }
  return object_backend_gone(x.object, {});
}

void remember_answer(Exchange& x, const core::AnswerIds& ids, core::TimeMs now) {
  if (!x.ctx.call.stateful) return;
  auto& table = *x.snap.affinity;
  if (x.creates && !ids.id.empty()) {
    // A background response is pending until an answer carries its usage (note_answer
    // settles it at once when its create did).
    auto billing = x.ctx.charge == Charge::kDeferred ? routing::Billing::kPending : routing::Billing::kSettled;
    table.remember(ids.id, object_owner(x, x.ctx.backend), now, billing);
  }
  if (!x.owner) return;
  for (const auto& id : ids.derived) {  // a batch's output: its owner's, on its backend
    if (table.find(id, now)) continue;
    auto owner = *x.owner;
    owner.backend = std::string(x.ctx.backend);
    table.remember(id, std::move(owner), now);
  }
}

void note_answer(Exchange& x, const core::AnswerIds& ids, core::TimeMs now) {
  auto& ctx = x.ctx;
  if (ctx.status / 100 != 2 || !ctx.call.stateful) return;
  auto& table = *x.snap.affinity;
  if (x.creates && ctx.charge == Charge::kDeferred && ctx.usage.present && !ids.id.empty() &&
      table.claim_billing(ids.id, now)) {
    ctx.charge = Charge::kTokens;  // it ran to the end within the create (a stream)
    x.claimed = ids.id;
  }
  if (!x.owner) return;
  if (ctx.usage.present && ctx.charge == Charge::kNone && table.claim_billing(x.object, now)) {
    ctx.charge = Charge::kTokens;
    x.claimed = x.object;
  }
  if (deletes_named_object(x)) table.forget(x.object);
}

StageResult pin(Exchange& x) {
  const auto& header = x.config().routing.pin_header;
  if (header.empty()) return std::nullopt;
  auto name = x.req.headers[header];
  if (name.empty()) return std::nullopt;
  if (x.caller != nullptr && !x.caller->may_pin) {
    return forbidden("This client may not choose a backend (" + header + ").");
  }
  auto it = x.snap.backend_index.find(std::string(name));
  if (it == x.snap.backend_index.end() || !x.route->route.contains(it->second) ||
      !x.allowed.allows(it->second)) {
    return Reply::error("bad_pin", core::bad_request("the " + header +
                                                     " header names no backend of deployment '" +
                                                     x.ctx.deployment->name + "'"));
  }
  if (x.only && *x.only != it->second) {
    return Reply::error("bad_pin", core::bad_request("the " + header +
                                                     " header conflicts with the backend that "
                                                     "holds the object this request names"));
  }
  x.only = it->second;
  return std::nullopt;
}

void hide_pin_header(Exchange& x) { x.ctx.drop_header = x.config().routing.pin_header; }

}  // namespace tollgate::pipeline

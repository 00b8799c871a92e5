// Stages that fix the backend before the balancer: stored objects live on the backend that
// created them (locate_objects), and a tester may pin one (pin).

#include "server/pipeline/stages.hpp"
#include "tollgate/core/objects.hpp"
#include "tollgate/routing/affinity.hpp"

namespace tollgate::pipeline {

namespace {

// The same answer for an id nobody made through the gateway and for another caller's object:
// a caller learns nothing about objects that are not its own.
Reply unknown_object(const std::string& id) {
  return Reply::error("unknown_object",
                      core::not_found("404", "No object '" + id +
                                                 "' is known to this gateway: it was not "
                                                 "created through it, or it expired from its "
                                                 "affinity table."));
}

}  // namespace

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
  auto& ctx = x.ctx;
  if (!ctx.call.stateful) return std::nullopt;
  const core::BodyFields* fields = ctx.call.fields ? &*ctx.call.fields : nullptr;
  x.creates = core::creates_object(x.req.method, ctx.call.op_path, ctx.call.body, fields);
  auto ids = core::referenced_ids(ctx.call.op_path, ctx.call.body, fields);
  auto now = x.clock.steady_ms();
  const auto& route = x.route->route;
  for (const auto& id : ids) {
    auto owner = x.snap.affinity->find(id, now);
    if (!owner) continue;
    if (!may_use(x, *owner)) return unknown_object(id);
    auto it = x.snap.backend_index.find(owner->backend);
    if (it == x.snap.backend_index.end() || !route.contains(it->second)) {
      return Reply::error("object_backend_gone",
                          core::not_found("404", "The object '" + id +
                                                     "' lives on a backend that no longer serves "
                                                     "deployment '" + ctx.deployment->name + "'."));
    }
    x.only = it->second;
    return std::nullopt;
  }
  if (!ids.empty() && route.size() > 1) return unknown_object(ids.front());
  return std::nullopt;
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

// The stages that decide who calls what: before the body authenticate, classify_target,
// authorize_target; after it classify, list_models, route, check_operation, authorize.

#include "server/pipeline/stages.hpp"

#include <algorithm>

namespace tollgate::pipeline {

namespace {

Reply unauthenticated(const auth::Identity& id) {
  core::HttpError e{401, "401",
                    "Access denied due to a missing, invalid or expired API key or token. Send "
                    "your key in the api-key header, or a bearer token in the Authorization header.",
                    "invalid_request_error", {}};
  std::string challenge = "Bearer realm=\"tollgate\"";
  if (id.token) challenge += ", error=\"invalid_token\"";
  HeaderList headers;
  headers.emplace_back("www-authenticate", std::move(challenge));
  // missing_credentials, unknown_key, token_expired, ...
  return Reply::error(id.reason, e, std::move(headers));
}

StageResult deployment_allowed(const config::ClientConfig& caller, const std::string& name) {
  if (auth::allows_deployment(caller, name)) return std::nullopt;
  return forbidden("This client may not use deployment '" + name + "'.");
}

StageResult operation_allowed(const config::ClientConfig& caller, const core::ApiCall& call) {
  auto op = auth::operation_name(call);
  if (auth::allows_operation(caller, op)) return std::nullopt;
  return forbidden("This client may not call the '" + std::string(op) + "' operation.");
}

}  // namespace

Reply unknown_deployment() {
  return Reply::error("unknown_deployment",
                      core::not_found("DeploymentNotFound",
                                      "The API deployment for this resource does not exist."));
}

StageResult authenticate(Exchange& x) {
  const auto& acfg = *x.auth.config;
  x.identity = auth::authenticate({x.req.headers["api-key"], x.req.headers["authorization"]}, acfg,
                                  *x.auth.keys, x.auth.jwks, x.clock.unix_seconds());
  auto& ctx = x.ctx;
  switch (x.identity.kind) {
    case auth::Identity::Kind::kUnauthenticated:
      return unauthenticated(x.identity);
    case auth::Identity::Kind::kForbidden:
      return Reply::error(x.identity.reason,
                          core::HttpError{403, "PermissionDenied",
                                          "The token is valid but does not name a client of this gateway.",
                                          "permission_error", {}});
    case auth::Identity::Kind::kClient:
      x.caller = &acfg.clients[x.identity.client];
      ctx.client = x.caller->name;
      ctx.tenant = x.caller->tenant == config::ClientConfig::kNoTenant
                       ? std::string("none")
                       : acfg.tenants[x.caller->tenant].name;
      ctx.client_series = x.auth.client_series[x.identity.client];
      break;
    case auth::Identity::Kind::kAnonymous:
      ctx.client = "anonymous";
      ctx.client_series = x.auth.anonymous_series;
      break;
  }
  return std::nullopt;
}

// Classified only after authentication: an unauthenticated caller costs no parsing.
StageResult classify_target(Exchange& x) {
  auto classified = core::classify_target(x.req.method, x.req.target);
  x.ctx.call = std::move(classified.call);
  if (classified.error) return Reply::error("bad_request", *classified.error);
  return std::nullopt;
}

StageResult authorize_target(Exchange& x) {
  const auto& call = x.ctx.call;
  if (call.op == core::Operation::kModels) return std::nullopt;  // list_models decides
  bool named = !call.model_from_body;  // /openai/deployments/{d}/...
  if (named && x.config().find_deployment(call.deployment) == nullptr) return unknown_deployment();
  if (x.caller == nullptr) return std::nullopt;
  if (named) {
    if (auto refused = deployment_allowed(*x.caller, call.deployment)) return refused;
  }
  return operation_allowed(*x.caller, call);
}

StageResult classify(Exchange& x) {
  auto& call = x.ctx.call;
  core::ClassifyOptions options;
  options.json.max_depth = x.config().server.limits.max_json_depth;
  if (auto e = core::classify_content(call, x.req.method, x.req.headers["content-type"],
                                      x.req.body, options)) {
    return Reply::error("bad_request", *e);
  }
  bool background = call.op == core::Operation::kResponses && call.fields &&
                    core::as_bool(call.body, (*call.fields)[core::BodyField::kBackground]).value_or(false);
  if (x.inference()) x.ctx.charge = background ? Charge::kDeferred : Charge::kTokens;
  // Streams carry usage only when asked for (stream_options.include_usage); a background
  // response's create answer has none yet.
  x.ctx.usage_expected = x.ctx.charge == Charge::kTokens && (!call.stream || call.include_usage);
  return std::nullopt;
}

StageResult list_models(Exchange& x) {
  if (x.ctx.call.op != core::Operation::kModels) return std::nullopt;
  const auto* caller = x.caller;
  if (caller != nullptr && !auth::allows_operation(*caller, "models")) {
    return forbidden("This client may not call the 'models' operation.");
  }
  auto allowed = [caller](std::string_view d) {
    return caller == nullptr || auth::allows_deployment(*caller, d);
  };
  return Reply::ok(core::models_list(x.config(), allowed));
}

StageResult route(Exchange& x) {
  if (x.owner) return route_to_owner(x);
  const auto& cfg = x.config();
  auto& ctx = x.ctx;
  if (ctx.call.stateful && ctx.call.deployment.empty()) {
    ctx.deployment = &cfg.deployments[cfg.routing.affinity_deployment];
  } else {
    ctx.deployment = cfg.find_deployment(ctx.call.deployment);
  }
  if (ctx.deployment == nullptr) return unknown_deployment();
  x.route = &x.snap.deployments[cfg.deployment_index(*ctx.deployment)];
  ctx.series = x.route->series_none;
  return std::nullopt;
}

// The deployment is known only here (the v1 surfaces name it in the body), so the check follows
// route rather than living in core::classify.
StageResult check_operation(Exchange& x) {
  auto& ctx = x.ctx;
  const auto& call = ctx.call;  // written below only when the operation is listed
  bool known = call.op != core::Operation::kOther || call.stateful;
  if (known || call.surface == core::Surface::kAzureOther) return std::nullopt;
  std::string op(call.op_path);  // canonical; the list is lower case
  std::transform(op.begin(), op.end(), op.begin(), [](unsigned char c) {
    return static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  });
  const auto& listed = ctx.deployment->passthrough;
  auto entry = std::find(listed.begin(), listed.end(), op);
  if (entry == listed.end()) {
    return Reply::error(
        "unsupported_operation",
        core::HttpError{404, "OperationNotSupported",
                        "The operation '" + call.op_path + "' is not supported on deployment '" +
                            ctx.deployment->name +
                            "' by this gateway (list it in the deployment's passthrough to "
                            "forward it).",
                        {}, {}});
  }
  ctx.call.op_path = *entry;  // the backend receives the configured (lower-case) spelling
  ctx.passthrough = true;
  ctx.charge = Charge::kTokens;
  return std::nullopt;
}

StageResult authorize(Exchange& x) {
  if (x.caller == nullptr) return std::nullopt;  // anonymous callers may use everything
  const auto& caller = *x.caller;
  const auto& name = x.ctx.deployment->name;
  // An object on a deployment or in a region the caller may no longer use is not told apart
  // from an unknown one.
  if (auto refused = deployment_allowed(caller, name)) return x.owner ? unknown_object(x.object) : refused;
  if (auto refused = operation_allowed(caller, x.ctx.call)) return refused;
  if (caller.regions.empty()) return std::nullopt;
  auto mask = routing::BackendMask::none(x.snap.backends.size());
  bool any = false;
  for (const auto& tier : x.route->route.tiers) {
    for (const auto& m : tier) {
      if (!auth::allows_region(caller, x.snap.backends[m.backend].config->region)) continue;
      mask.allow(m.backend);
      any = true;
    }
  }
  if (x.only && !mask.allows(*x.only)) return unknown_object(x.object);
  if (!any) {
    return forbidden("No backend of deployment '" + name + "' is in a region this client may use.");
  }
  x.allowed = std::move(mask);
  return std::nullopt;
}

}  // namespace tollgate::pipeline

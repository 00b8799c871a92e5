#include "server/pipeline/stages.hpp"

namespace tollgate::pipeline {

std::string_view to_string(Outcome o) {
  switch (o) {
    case Outcome::kOk: return "ok";
    case Outcome::kRejected: return "rejected";
    case Outcome::kNoBackend: return "no_backend";
    case Outcome::kShed: return "shed";
    case Outcome::kUpstreamError: return "upstream_error";
    case Outcome::kClientGone: return "client_gone";
    case Outcome::kShutdown: return "shutdown";
    case Outcome::kInternalError: return "internal_error";
  }
  return "unknown";
}

bool Exchange::inference() const { return core::is_inference(ctx.call.op); }

namespace {

StageResult run_stages(std::span<const Stage> stages, Exchange& x) {
  for (const auto& stage : stages) {
    if (auto reply = stage.run(x)) {
      x.ctx.outcome = reply->outcome;
      x.ctx.error = reply->reason;
      return reply;
    }
  }
  return std::nullopt;
}

}  // namespace

StageResult run_header_stages(Exchange& x) { return run_stages(kHeaderStages, x); }
StageResult run_locating_stages(Exchange& x) {
  return run_stages(std::span(kRequestStages).first(kLocatedStages), x);
}
StageResult run_routing_stages(Exchange& x) {
  return run_stages(std::span(kRequestStages).subspan(kLocatedStages), x);
}
StageResult run_request_stages(Exchange& x) {
  if (auto reply = run_locating_stages(x)) return reply;
  return run_routing_stages(x);
}

void run_request_filters(Exchange& x) {
  for (const auto& filter : kRequestFilters) filter.run(x);
}

}  // namespace tollgate::pipeline

#include "server/pipeline/stages.hpp"

namespace tollgate::pipeline {

bool Exchange::inference() const { return core::is_inference(ctx.call.op); }

StageResult run_request_stages(Exchange& x) {
  for (const auto& stage : kRequestStages) {
    if (auto reply = stage.run(x)) {
      x.ctx.outcome = reply->outcome;
      x.ctx.error = reply->reason;
      return reply;
    }
  }
  return std::nullopt;
}

void run_request_filters(Exchange& x) {
  for (const auto& filter : kRequestFilters) filter.run(x);
}

}  // namespace tollgate::pipeline

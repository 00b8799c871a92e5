#pragma once
// The end of every request, on every path (answered, refused, failed, cut off by a stop): settle
// the reservation and budgets against what is billed, count it in the worker's metrics, hand a
// record to the usage ledger, and write the access-log line. Thread: the request's worker.

#include "server/pipeline/request_context.hpp"
#include "tollgate/metrics/logging.hpp"
#include "tollgate/metrics/stats.hpp"

namespace tollgate::usage {
class Ledger;
}

namespace tollgate::pipeline {

/// Where a finished request is recorded: the worker's statistics, the usage ledger (null: none),
/// the access log.
struct FinishEnv {
  metrics::WorkerStats& stats;
  usage::Ledger* ledger = nullptr;
  metrics::AccessLog& access_log;
  const core::Clock& clock = core::system_clock();  // settlement times, record and log stamps
  cluster::Settler* shared = nullptr;  // settles holds in the cluster's store (null: no cluster)
};

/// What a finished request is billed: the backend's usage, else (a successful inference answer
/// without usage, like a stream the client left early) the prompt estimate plus the generated
/// text the gateway relayed, counted with the tokenizer and marked estimated, else nothing.
core::Usage billed_usage(pipeline::RequestContext& ctx);

void settle(pipeline::RequestContext& ctx, const core::Usage& billed,
            const core::Clock& clock = core::system_clock(), cluster::Settler* shared = nullptr);
void record_stats(metrics::WorkerStats& stats, const pipeline::RequestContext& ctx, std::int64_t duration_us);
void record_usage(usage::Ledger& ledger, const pipeline::RequestContext& ctx, const core::Usage& billed,
                  std::int64_t duration_us, const core::Clock& clock = core::system_clock());
void write_access_log(metrics::AccessLog& log, const pipeline::RequestContext& ctx, std::int64_t duration_us,
                      const core::Clock& clock = core::system_clock());

/// All of the above, once per request.
void finish(const FinishEnv& env, pipeline::RequestContext& ctx);

}  // namespace tollgate::pipeline

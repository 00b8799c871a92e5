#pragma once
// Everything known about one request while it runs through the pipeline. Owned by the session
// coroutine that handles the request; never shared across threads.

#include <chrono>
#include <optional>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/shared_hold.hpp"
#include "tollgate/core/api_call.hpp"
#include "tollgate/core/clock.hpp"
#include "tollgate/core/usage.hpp"
#include "tollgate/ratelimit/budget.hpp"
#include "tollgate/ratelimit/bucket.hpp"

namespace tollgate::tokenize {
class Tokenizers;
}

namespace tollgate::pipeline {

using core::SteadyClock;
using core::Usage;
using core::ApiCall;

/// How a request ended (access log `outcome`, ledger, metrics).
enum class Outcome : std::uint8_t {
  kOk,             // answered (whatever the status)
  kRejected,       // refused by the gateway before any backend (auth, policy, limits, routing)
  kNoBackend,      // no backend could take it
  kShed,           // waited for capacity and got none (queue full, deadline)
  kUpstreamError,  // the backend failed it
  kClientGone,     // the client left before the answer ended
  kShutdown,       // cut off by a stop after the drain timeout
  kInternalError,  // an exception ended it
};
std::string_view to_string(Outcome o);

/// One backend attempt of a request, for the access log.
struct AttemptLog {
  std::string_view backend;  // points into the snapshot
  int status = 0;            // the backend's status (0: none)
  std::string_view reason;   // ok | throttled | server_error | timeout | connect | ...
  std::int64_t duration_us = 0;
};

/// What a request's answer is charged (finish: limits, budgets, ledger tokens, token metrics).
enum class Charge : std::uint8_t {
  kNone,      // reading, listing, cancelling or deleting an object: a ledger row with 0 tokens
  kTokens,    // inference and passthrough calls: their usage, else the gateway's count
  kDeferred,  // creating a background response: charged by the first answer carrying its usage
};

struct RequestContext {
  std::string request_id;
  std::string method;
  std::string path;  // without the query
  std::string remote;
  std::string user_agent;
  ApiCall call;
  const config::DeploymentConfig* deployment = nullptr;
  std::string_view backend;  // name of the backend tried last (points into the snapshot)
  std::uint32_t series = 0;  // metrics series (deployment, backend)
  SteadyClock::time_point start{};
  std::int64_t ttfb_us = -1;  // first response byte from the backend
  int status = 0;             // status sent to the client (0: none)
  int upstream_status = 0;
  Usage usage;
  std::uint64_t bytes_in = 0;
  std::uint64_t bytes_out = 0;
  Outcome outcome = Outcome::kOk;
  std::string_view error;           // machine-readable reason when not ok
  std::string client = "unauthenticated";  // or a client's name, or "anonymous"
  std::string tenant = "none";
  std::uint32_t client_series = 0;  // per-client metrics id (0: unauthenticated)
  bool usage_expected = false;  // a successful inference response should carry usage
  bool passthrough = false;     // an operation the deployment lists in `passthrough`: billed
                                // from its answer (usage, else streamed text) like inference
  Charge charge = Charge::kNone;  // classify, check_operation; the answer may settle a deferral
  std::vector<AttemptLog> attempts;
  std::string_view drop_header;  // one more request header kept from backends (the pin header)
  bool count_output = false;     // keep a stream's generated text (usage may not come)
  bool strip_usage = false;      // the gateway asked for the stream's usage: take it back out
  std::string output_text;       // that text, as relayed so far
  std::string response_headers;  // extra "name: value\r\n" lines for the client (rate limits)
  // Admission: the tokens held for this request, settled in finish() against its real use.
  ratelimit::Reservation reservation;
  ratelimit::BudgetHold budget_hold;  // calendar budgets, settled with the reservation
  // With a cluster: what admit asks of the shared limits, what the admit_shared await stage
  // got there (settled by the worker's SharedLimiter), and whether it fell back to this
  // process's buckets because the store was away (on_failure: local).
  std::optional<cluster::Demand> shared_demand;
  cluster::SharedHold shared_hold;
  bool shared_local = false;
  std::int64_t prompt_estimate = 0;
  bool prompt_counted = false;  // admit counted it (a token limit or budget needed it)
  const tokenize::Tokenizers* tokenizers = nullptr;  // for counting a stream's output
  std::string_view model;                            // the deployment's model (tokenizer)
  std::int64_t charged_tokens = 0;                   // what the settle charged
  bool usage_estimated = false;                      // charged_tokens counted by the gateway
  std::int64_t cost_nano_usd = 0;                    // by the deployment's price table
  int tier = 0;  // 1-based tier of the backend that answered (0: none)
  std::string_view priority;    // the priority class (points into the config; "": not routed)
  std::int64_t queue_us = -1;   // time waited for capacity (-1: did not wait)
};


}  // namespace tollgate::pipeline
